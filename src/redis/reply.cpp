#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/reply.hpp>

#include "detail/reply_builder.hpp"

#include <hiredis/read.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace trading_shared::redis {

std::string_view to_string(ReplyType type) noexcept {
  switch (type) {
    case ReplyType::string:
      return "string";
    case ReplyType::status:
      return "status";
    case ReplyType::integer:
      return "integer";
    case ReplyType::nil:
      return "nil";
    case ReplyType::error:
      return "error";
    case ReplyType::array:
      return "array";
  }
  return "unknown";
}

const detail::ReplyNode& ReplyView::node() const noexcept {
  return reply_->nodes_[node_];
}

std::string_view ReplyView::bytes() const noexcept {
  const auto& n = node();
  return std::string_view(reply_->data_).substr(n.offset, n.length);
}

void ReplyView::mismatch(std::string_view wanted) const {
  std::string what = "Redis reply: expected ";
  what += wanted;
  what += ", got ";
  what += to_string(type());
  if (is_error()) {
    what += " (";
    what += bytes();
    what += ')';
  }
  throw Error(make_error_code(errc::type_mismatch), what, RequestState::sent);
}

std::string_view ReplyView::as_string() const {
  if (!is_string()) mismatch("a string");
  return bytes();
}

std::optional<std::string_view> ReplyView::as_optional_string() const {
  if (is_nil()) return std::nullopt;
  return as_string();
}

std::int64_t ReplyView::as_int() const {
  if (is_integer()) return node().integer;
  if (type() == ReplyType::string) {
    const auto text = bytes();
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() && !text.empty()) return value;
    mismatch("an integer (the string is not a decimal int64)");
  }
  mismatch("an integer");
}

double ReplyView::as_double() const {
  if (is_integer()) return static_cast<double>(node().integer);
  if (type() == ReplyType::string) {
    const std::string text(bytes());  // strtod needs a terminator
    if (text == "inf" || text == "+inf") return std::numeric_limits<double>::infinity();
    if (text == "-inf") return -std::numeric_limits<double>::infinity();
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (!text.empty() && end == text.c_str() + text.size()) return value;
    mismatch("a double (the string is not a number)");
  }
  mismatch("a double");
}

bool ReplyView::as_bool() const {
  if (!is_integer()) mismatch("an integer 0 or 1");
  return node().integer != 0;
}

std::string_view ReplyView::error_message() const {
  if (!is_error()) mismatch("an error");
  return bytes();
}

std::string_view ReplyView::error_prefix() const {
  const auto line = error_message();
  return line.substr(0, line.find(' '));
}

std::size_t ReplyView::size() const {
  if (is_array()) return node().count;
  if (is_nil()) return 0;
  mismatch("an array");
}

ReplyView ReplyView::operator[](std::size_t index) const {
  if (!is_array()) mismatch("an array");
  if (index >= node().count) {
    throw Error(make_error_code(errc::type_mismatch),
                "Redis reply: element " + std::to_string(index) + " of an array of " +
                    std::to_string(node().count),
                RequestState::sent);
  }
  return ReplyView(reply_, reply_->children_[node().first + index]);
}

ReplyView::iterator ReplyView::begin() const {
  return is_array() ? iterator(reply_, node().first) : iterator(reply_, 0);
}

ReplyView::iterator ReplyView::end() const {
  return is_array() ? iterator(reply_, node().first + node().count) : iterator(reply_, 0);
}

const ReplyView& ReplyView::throw_if_error(std::string_view context) const {
  if (is_error()) {
    throw make_server_error(bytes(), std::string(context), RequestState::sent);
  }
  return *this;
}

std::string ReplyView::debug_string() const {
  constexpr std::size_t kMax = 64;
  switch (type()) {
    case ReplyType::nil:
      return "(nil)";
    case ReplyType::integer:
      return "(integer) " + std::to_string(node().integer);
    case ReplyType::status:
      return std::string(bytes());
    case ReplyType::error:
      return "(error) " + std::string(bytes());
    case ReplyType::string: {
      const auto b = bytes();
      std::string out = "\"";
      for (const char c : b.substr(0, kMax)) {
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
          out += c;
        } else {
          static constexpr char kHex[] = "0123456789abcdef";
          const auto u = static_cast<unsigned char>(c);
          out += "\\x";
          out += kHex[u >> 4];
          out += kHex[u & 15];
        }
      }
      if (b.size() > kMax) out += "...(" + std::to_string(b.size()) + " bytes)";
      return out + '"';
    }
    case ReplyType::array: {
      std::string out = "[";
      std::size_t i = 0;
      for (const auto element : *this) {
        if (i > 0) out += ", ";
        if (++i > 16) {
          out += "...";
          break;
        }
        out += element.debug_string();
      }
      return out + ']';
    }
  }
  return "?";
}

std::string Reply::take_string() && {
  const auto bytes = view().as_string();  // checks the type
  std::string out;
  if (nodes_.size() == 1 && nodes_[0].offset == 0 && bytes.size() == data_.size()) {
    out = std::move(data_);
  } else {
    out.assign(bytes);
  }
  reset_nil();
  return out;
}

// ---- ReplyBuilder: hiredis reader object functions ---------------------------------------

namespace detail {
namespace {

thread_local ReplyBuilder* current_builder = nullptr;
// Why an object function refused a reply (hiredis only reports "Out of memory").
thread_local const char* build_error = nullptr;

// Array slots are numbered as the headers arrive but only stored as the elements do: a count
// announced by the server costs nothing until its elements are received (found by
// fuzz/fuzz_resp: "*1444444444\r\n", 13 bytes, made the parser allocate 5.8 GB). While a reply
// is built, children_[i - 1] is the slot of node i, and the root array's `integer` field holds
// the number of slots numbered so far; finish_tree puts children_ in slot order.
constexpr std::uint64_t kMaxSlots = std::numeric_limits<std::uint32_t>::max();

// hiredis wants a non-null object per node; ours is the node's index plus one, never
// dereferenced.
void* node_pointer(std::uint32_t index) {
  return reinterpret_cast<void*>(  // NOLINT(performance-no-int-to-ptr)
      static_cast<std::uintptr_t>(index) + 1);
}
std::uint32_t node_index(void* pointer) {
  return static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(pointer) - 1);
}

/// A RESP integer as hiredis 0.14+ reads it (Redis's string2ll): an optional '-', then "0"
/// alone (not "-0") or digits without a leading zero, within int64.
bool canonical_integer(std::string_view text, std::int64_t& value) noexcept {
  const std::string_view digits = text.starts_with('-') ? text.substr(1) : text;
  if (digits.empty() || digits[0] < '0' || digits[0] > '9') return false;
  if (digits[0] == '0' && (digits.size() != 1 || digits.size() != text.size())) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && ptr == text.data() + text.size();
}

/// The common case of `canonical_integer`, without from_chars: 1 to 18 digits, no leading
/// zero (cannot overflow). False for anything else, which `canonical_integer` then decides.
bool short_positive_integer(std::string_view text, std::int64_t& value) noexcept {
  if (text.empty() || text.size() > 18 || text[0] < '1' || text[0] > '9') return false;
  std::int64_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  value = v;
  return true;
}

}  // namespace

std::uint32_t ReplyBuilder::add_node(const redisReadTask* task, ReplyNode node) {
  auto& reply = current_;
  if (task->parent == nullptr) {
    reply.nodes_.clear();
    reply.children_.clear();
    reply.data_.clear();
  }
  const auto index = static_cast<std::uint32_t>(reply.nodes_.size());
  reply.nodes_.push_back(node);
  if (task->parent != nullptr) {
    const auto& parent = reply.nodes_[node_index(task->parent->obj)];
    reply.children_.push_back(parent.first + static_cast<std::uint32_t>(task->idx));
  }
  return index;
}

void* ReplyBuilder::create_string(const redisReadTask* task, char* str, size_t len) {
  ReplyBuilder& self = *current_builder;
  ReplyNode node;
  switch (task->type) {
    case REDIS_REPLY_ERROR:
      node.type = ReplyType::error;
      break;
    case REDIS_REPLY_STATUS:
      node.type = ReplyType::status;
      break;
    default:
      node.type = ReplyType::string;
      break;
  }
  // The data buffer belongs to the reply being built; for the root it is reset in add_node,
  // so the offset is taken afterwards.
  const std::uint32_t index = self.add_node(task, node);
  auto& reply = self.current_;
  reply.nodes_[index].offset = static_cast<std::uint32_t>(reply.data_.size());
  reply.nodes_[index].length = static_cast<std::uint32_t>(len);
  reply.data_.append(str, len);
  return node_pointer(index);
}

void* ReplyBuilder::create_array(const redisReadTask* task, int elements) {
  ReplyBuilder& self = *current_builder;
  ReplyNode node;
  node.type = ReplyType::array;
  node.count = static_cast<std::uint32_t>(elements);
  const std::uint32_t index = self.add_node(task, node);
  auto& reply = self.current_;
  std::int64_t& numbered = reply.nodes_[0].integer;  // the root is an array: field unused
  if (index == 0) numbered = 0;
  if (static_cast<std::uint64_t>(numbered) + static_cast<std::uint64_t>(elements) > kMaxSlots) {
    build_error = "more than 2^32 array elements in one reply";
    return nullptr;  // hiredis fails the read
  }
  reply.nodes_[index].first = static_cast<std::uint32_t>(numbered);
  numbered += elements;
  return node_pointer(index);
}

void* ReplyBuilder::create_integer(const redisReadTask* task, long long value) {
  ReplyNode node;
  node.type = ReplyType::integer;
  node.integer = value;
  return node_pointer(current_builder->add_node(task, node));
}

void* ReplyBuilder::create_nil(const redisReadTask* task) {
  return node_pointer(current_builder->add_node(task, ReplyNode{}));
}

void ReplyBuilder::free_object(void* /*object*/) {
  // Nodes live in the reply under construction; it is reset when the next root starts.
}

namespace {
redisReplyObjectFunctions reply_functions = {
    &ReplyBuilder::create_string, &ReplyBuilder::create_array, &ReplyBuilder::create_integer,
    &ReplyBuilder::create_nil, &ReplyBuilder::free_object};
}  // namespace

ReplyBuilder::ReplyBuilder() : reader_(redisReaderCreateWithFunctions(&reply_functions)) {
  if (reader_ == nullptr) throw std::bad_alloc();
  // Keep the read buffer instead of freeing it whenever it drains (hiredis's default frees
  // buffers over 16 KiB when empty, which would cost an allocation per large batch).
  reader_->maxbuf = 0;
}

ReplyBuilder::~ReplyBuilder() {
  redisReaderFree(reader_);
}

void ReplyBuilder::feed(const char* data, std::size_t size) {
  keep_rest();  // bytes of an earlier chunk not consumed yet go first
  chunk_ = data;
  chunk_size_ = size;
}

void ReplyBuilder::keep_rest() {
  if (chunk_size_ == 0) return;
  const char* data = chunk_;
  const std::size_t size = chunk_size_;
  chunk_ = nullptr;
  chunk_size_ = 0;
  if (redisReaderFeed(reader_, data, size) != REDIS_OK) {
    throw Error(make_error_code(errc::protocol_error),
                std::string("Redis reply parser: ") + reader_->errstr, RequestState::sent);
  }
}

bool ReplyBuilder::parse_scalar(Reply& out) {
  // Fast path for whole scalar replies at the start of the chunk while hiredis holds nothing:
  // "+status", "-error", ":integer", "$len bulk" (and "$-1"). Anything else, or anything
  // incomplete, goes to hiredis.
  if (chunk_size_ < 3 || reader_->len != reader_->pos || reader_->ridx != -1) return false;
  const char kind = chunk_[0];
  if (kind != '+' && kind != '-' && kind != ':' && kind != '$') return false;
  const auto* end = static_cast<const char*>(std::memchr(chunk_, '\r', chunk_size_));
  if (end == nullptr || static_cast<std::size_t>(end - chunk_) + 1 >= chunk_size_ ||
      end[1] != '\n') {
    return false;
  }
  const std::string_view line(chunk_ + 1, static_cast<std::size_t>(end - chunk_ - 1));
  std::size_t consumed = line.size() + 3;
  // Built straight in `out` (no swap with `current_`, which only hiredis's path uses): `out`
  // is only changed once the reply is known to be complete and valid.
  ReplyNode node;
  if (kind == ':' || kind == '$') {
    std::int64_t value = 0;
    // Only what hiredis's reader (string2ll) accepts, with the same meaning: the same bytes
    // must give the same reply however they are split into reads (found by fuzz/fuzz_resp:
    // from_chars also takes "-0", "007" and "$-2", which hiredis refuses).
    const bool integer = short_positive_integer(line, value) || canonical_integer(line, value);
    if (!integer || (kind == '$' && value < -1)) {
      return false;  // let hiredis report the protocol error
    }
    if (kind == ':') {
      node.type = ReplyType::integer;
      node.integer = value;
    } else if (value < 0) {
      node.type = ReplyType::nil;  // "$-1"
    } else {
      const auto length = static_cast<std::size_t>(value);
      if (chunk_size_ - consumed < length + 2) {
        return false;  // the bulk continues in later reads: hiredis buffers it
      }
      node.type = ReplyType::string;
      node.length = static_cast<std::uint32_t>(length);
      out.data_.clear();
      out.data_.append(chunk_ + consumed, length);
      consumed += length + 2;
    }
  } else {
    node.type = kind == '+' ? ReplyType::status : ReplyType::error;
    node.length = static_cast<std::uint32_t>(line.size());
    out.data_.clear();
    out.data_.append(line);
  }
  if (node.type == ReplyType::integer || node.type == ReplyType::nil) out.data_.clear();
  out.children_.clear();
  out.nodes_.resize(1);  // a reply always has its root (no allocation: inline capacity 1)
  out.nodes_[0] = node;
  chunk_ += consumed;
  chunk_size_ -= consumed;
  return true;
}

bool ReplyBuilder::next(Reply& out) {
  if (parse_scalar(out)) return true;
  // Nothing new and nothing buffered by hiredis (the reader's usual last call per read):
  // no reply, without a trip through hiredis.
  if (chunk_size_ == 0 && reader_->pos == reader_->len) return false;
  keep_rest();
  void* root = nullptr;
  current_builder = this;
  build_error = nullptr;
  const int rc = redisReaderGetReply(reader_, &root);
  current_builder = nullptr;
  if (rc != REDIS_OK) {
    throw Error(make_error_code(errc::protocol_error),
                std::string("Redis reply parser: ") +
                    (build_error != nullptr ? build_error : reader_->errstr),
                RequestState::sent);
  }
  if (root == nullptr) return false;
  // The reply is complete: every numbered slot has its node. Put children_ in slot order.
  const auto finish_tree = [this] {
    Reply& reply = current_;
    const std::size_t count = reply.nodes_.size() - 1;  // nodes other than the root
    if (count == 0) return;
    reply.nodes_[0].integer = 0;                      // was the number of slots
    thread_local std::vector<std::uint32_t> by_slot;  // reused: no allocation per reply
    by_slot.assign(count, 0);
    for (std::size_t node = 1; node <= count; ++node) {
      const std::uint32_t slot = reply.children_[node - 1];
      if (slot >= count) {
        throw Error(make_error_code(errc::protocol_error),
                    "Redis reply parser: array elements do not add up", RequestState::sent);
      }
      by_slot[slot] = static_cast<std::uint32_t>(node);
    }
    reply.children_.swap(by_slot);
  };
  finish_tree();
  swap(out, current_);
  return true;
}

void ReplyBuilder::reset() {
  chunk_ = nullptr;
  chunk_size_ = 0;
  redisReaderFree(reader_);
  reader_ = redisReaderCreateWithFunctions(&reply_functions);
  if (reader_ == nullptr) throw std::bad_alloc();
  reader_->maxbuf = 0;
}

}  // namespace detail
}  // namespace trading_shared::redis
