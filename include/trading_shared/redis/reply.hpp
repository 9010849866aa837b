#pragma once
/// @file
/// `Reply`: one Redis reply (RESP2), owned, with typed accessors; `ReplyView`: a non-owning
/// view of a reply or of one element of an array reply.
///
/// A reply is a small tree stored flat (nodes plus one byte buffer), built by hiredis's reader
/// through our own object functions: no `redisReply` objects and, for the common short
/// replies, no heap allocation at all.

#include <trading_shared/core/error.hpp>

#include <boost/container/small_vector.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::redis {

/// The RESP2 reply types.
enum class ReplyType : std::uint8_t { string, status, integer, nil, error, array };

std::string_view to_string(ReplyType type) noexcept;

class Reply;

namespace detail {
struct ReplyNode {
  ReplyType type = ReplyType::nil;
  std::uint32_t count = 0;   ///< array: number of elements.
  std::uint32_t first = 0;   ///< array: index of its first child in `children`.
  std::int64_t integer = 0;  ///< integer value.
  std::uint32_t offset = 0;  ///< string/status/error: offset of the bytes in `data`.
  std::uint32_t length = 0;  ///< ... and their length.
};
class ReplyBuilder;
}  // namespace detail

/// A view of one node of a `Reply`. Valid while the reply lives (and is not moved).
///
/// Accessors check the type and throw `Error(errc::type_mismatch)` with the actual type,
/// so a surprising reply is a clear error and never undefined behaviour.
class ReplyView {
 public:
  ReplyType type() const noexcept { return node().type; }
  bool is_nil() const noexcept { return type() == ReplyType::nil; }
  bool is_error() const noexcept { return type() == ReplyType::error; }
  bool is_array() const noexcept { return type() == ReplyType::array; }
  bool is_string() const noexcept {
    return type() == ReplyType::string || type() == ReplyType::status;
  }
  bool is_integer() const noexcept { return type() == ReplyType::integer; }

  /// Bulk string or status ("OK"): the bytes (binary-safe, may contain NUL and CRLF).
  std::string_view as_string() const;
  /// Nil → nullopt; string or status → the bytes.
  std::optional<std::string_view> as_optional_string() const;
  /// Integer reply; also accepts a bulk string holding a decimal integer (e.g. GET of a
  /// counter), checked for range and format.
  std::int64_t as_int() const;
  /// Double from a bulk string ("3.14", "inf") or an integer reply.
  double as_double() const;
  /// Integer reply 0/1.
  bool as_bool() const;
  /// Error reply: the whole error line ("WRONGTYPE Operation against ...").
  std::string_view error_message() const;
  /// Error reply: its prefix ("WRONGTYPE").
  std::string_view error_prefix() const;

  /// Array: number of elements (0 for a nil array, which has type nil).
  std::size_t size() const;
  /// Array element, bounds-checked (throws `type_mismatch` when out of range).
  ReplyView operator[](std::size_t index) const;
  /// Alias of `operator[]`.
  ReplyView at(std::size_t index) const { return (*this)[index]; }

  class iterator {  // NOLINT(readability-identifier-naming): the standard's name
   public:
    using value_type = ReplyView;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    ReplyView operator*() const;
    iterator& operator++() {
      ++index_;
      return *this;
    }
    iterator operator++(int) {
      iterator copy = *this;
      ++index_;
      return copy;
    }
    bool operator==(const iterator& other) const = default;

   private:
    friend class ReplyView;
    iterator(const Reply* reply, std::uint32_t index) : reply_(reply), index_(index) {}
    const Reply* reply_ = nullptr;
    std::uint32_t index_ = 0;
  };
  /// Iteration over an array's elements (empty for non-arrays).
  iterator begin() const;
  iterator end() const;

  /// Throws `Error` (a server error carrying the prefix and message) if this is an error
  /// reply; returns itself otherwise.
  const ReplyView& throw_if_error(std::string_view context) const;

  /// A short human-readable rendering for logs and test failures (strings truncated).
  std::string debug_string() const;

 private:
  friend class Reply;
  ReplyView(const Reply* reply, std::uint32_t node) noexcept : reply_(reply), node_(node) {}
  const detail::ReplyNode& node() const noexcept;
  std::string_view bytes() const noexcept;
  [[noreturn]] void mismatch(std::string_view wanted) const;

  const Reply* reply_;
  std::uint32_t node_;
};

/// One owned reply. Move-only in spirit (copying is allowed but copies the buffers).
/// A default-constructed reply is nil.
class Reply {
 public:
  Reply() { nodes_.emplace_back(); }
  Reply(const Reply&) = default;
  Reply& operator=(const Reply&) = default;
  /// A moved-from reply is nil.
  Reply(Reply&& other) noexcept
      : nodes_(std::move(other.nodes_)),
        children_(std::move(other.children_)),
        data_(std::move(other.data_)) {
    other.reset_nil();
  }
  Reply& operator=(Reply&& other) noexcept {
    if (this != &other) {
      nodes_ = std::move(other.nodes_);
      children_ = std::move(other.children_);
      data_ = std::move(other.data_);
      other.reset_nil();
    }
    return *this;
  }
  ~Reply() = default;
  friend void swap(Reply& a, Reply& b) noexcept {
    a.nodes_.swap(b.nodes_);
    a.children_.swap(b.children_);
    a.data_.swap(b.data_);
  }

  ReplyView view() const noexcept { return ReplyView(this, 0); }
  operator ReplyView() const noexcept { return view(); }  // NOLINT(google-explicit-constructor)

  ReplyType type() const noexcept { return view().type(); }
  bool is_nil() const noexcept { return view().is_nil(); }
  bool is_error() const noexcept { return view().is_error(); }
  bool is_array() const noexcept { return view().is_array(); }
  std::string_view as_string() const { return view().as_string(); }
  std::optional<std::string_view> as_optional_string() const { return view().as_optional_string(); }
  std::int64_t as_int() const { return view().as_int(); }
  double as_double() const { return view().as_double(); }
  bool as_bool() const { return view().as_bool(); }
  std::string_view error_message() const { return view().error_message(); }
  std::string_view error_prefix() const { return view().error_prefix(); }
  std::size_t size() const { return view().size(); }
  ReplyView operator[](std::size_t index) const { return view()[index]; }
  ReplyView::iterator begin() const { return view().begin(); }
  ReplyView::iterator end() const { return view().end(); }
  std::string debug_string() const { return view().debug_string(); }

  /// A bulk string or status reply's bytes, moved out (no copy); the reply is nil afterwards.
  /// Throws `type_mismatch` for other types.
  std::string take_string() &&;

 private:
  friend class ReplyView;
  friend class detail::ReplyBuilder;
  void reset_nil() noexcept {
    nodes_.clear();
    nodes_.emplace_back();  // fits the inline capacity: no allocation
    children_.clear();
    data_.clear();
  }
  boost::container::small_vector<detail::ReplyNode, 1> nodes_;
  std::vector<std::uint32_t> children_;
  std::string data_;
};

inline ReplyView ReplyView::iterator::operator*() const {
  return ReplyView(reply_, reply_->children_[index_]);
}

}  // namespace trading_shared::redis
