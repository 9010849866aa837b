// The shared connection's request multiplexer, without sockets (multiplexer.hpp).

#include "multiplexer.hpp"

#include "failed.hpp"

#include <algorithm>

namespace trading_shared::redis::detail {

void copy_command_name(std::string_view encoded, std::array<char, 24>& name) noexcept {
  // Skip "*N\r\n", then read L of "$L\r\n".
  std::size_t pos = 1;
  while (pos < encoded.size() && encoded[pos] != '\n') ++pos;
  pos += 2;  // past '\n' and '$'
  std::size_t length = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    length = length * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;  // past "\r\n"
  if (pos >= encoded.size()) {
    name[0] = '\0';
    return;
  }
  const std::size_t n = std::min({length, name.size() - 1, encoded.size() - pos});
  for (std::size_t i = 0; i < n; ++i) {
    const char c = encoded[pos + i];
    name[i] = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  }
  name[n] = '\0';
}

void SlotHandle::reset() noexcept {
  if (slot_ != nullptr) mux_->release(slot_);
  mux_ = nullptr;
  slot_ = nullptr;
}

Multiplexer::Multiplexer(std::string description, RedisStats& stats, MultiplexerEvents& events)
    : description_(std::move(description)), stats_(stats), events_(events) {}

// ---- slots ---------------------------------------------------------------------------------

Slot* Multiplexer::allocate() {
  if (!free_.empty()) {
    Slot* slot = free_.back();
    free_.pop_back();
    return slot;
  }
  slots_.push_back(std::make_unique<Slot>());
  return slots_.back().get();
}

void Multiplexer::recycle(Slot* slot) noexcept {
  slot->phase = Slot::Phase::queued;
  slot->in_fifo = slot->owned = slot->completed = slot->internal = false;
  slot->mode = ReplyMode::single;
  slot->expected = slot->received = slot->added = 0;
  slot->first_error = Slot::kNoError;
  slot->bytes = 0;
  slot->deadline = kNoDeadline;
  slot->replies.clear();
  slot->error = nullptr;
  slot->name[0] = '\0';
  slot->static_name = nullptr;
  slot->waiter.reset();
  slot->cancel_slot = {};
  slot->permit.ignore();
  free_.push_back(slot);
}

Slot* Multiplexer::begin(std::size_t replies, ReplyMode mode, Clock::time_point deadline) {
  Slot* slot = allocate();
  slot->expected = static_cast<std::uint32_t>(replies);
  slot->mode = mode;
  if (mode == ReplyMode::multi) slot->replies.reserve(replies);
  slot->deadline = deadline;
  return slot;
}

SlotHandle Multiplexer::commit(Slot* slot, std::size_t start, const char* name) noexcept {
  slot->bytes = pending_.size() - start;
  if (name != nullptr) {
    slot->static_name = name;  // a typed helper: no need to parse it back
  } else {
    copy_command_name(std::string_view(pending_).substr(start), slot->name);
  }
  slot->in_fifo = true;
  slot->owned = true;
  slot->phase = Slot::Phase::queued;
  fifo_.push_back(slot);
  ++queued_count_;
  ++stats_.commands;
  return SlotHandle(this, slot);
}

void Multiplexer::abort(Slot* slot, std::size_t start) noexcept {
  pending_.resize(start);
  slot->permit.ignore();
  recycle(slot);
}

void Multiplexer::push_ping() {
  Slot* slot = allocate();
  slot->internal = true;
  slot->expected = 1;
  slot->deadline = kNoDeadline;  // the health check watches it
  const std::size_t start = pending_.size();
  encode_command(pending_, "PING");
  slot->bytes = pending_.size() - start;
  slot->static_name = "PING";
  slot->in_fifo = true;
  fifo_.push_back(slot);
  ++queued_count_;
  ++stats_.health_checks;
}

void Multiplexer::release(Slot* slot) noexcept {
  slot->owned = false;
  if (!slot->completed) {
    // Abandoned before completion (the awaitable was destroyed): same as a cancellation;
    // finish() recycles the slot if it has left the FIFO.
    cancel(slot);
    return;
  }
  if (!slot->in_fifo) recycle(slot);
}

void Multiplexer::remove_queued(Slot* slot) noexcept {
  std::size_t offset = 0;
  for (std::size_t i = outstanding(); i < fifo_.size(); ++i) {
    if (fifo_[i] == slot) {
      pending_.erase(offset, slot->bytes);
      fifo_.erase(fifo_.begin() + static_cast<std::ptrdiff_t>(i));
      --queued_count_;
      slot->in_fifo = false;
      return;
    }
    offset += fifo_[i]->bytes;
  }
}

void Multiplexer::cancel(Slot* slot) noexcept {
  if (slot->completed) return;
  ++stats_.cancellations;
  const bool queued = slot->in_fifo && slot->phase == Slot::Phase::queued;
  if (queued) remove_queued(slot);
  finish(slot,
         make_error(errc::cancelled,
                    "Redis " + std::string(slot->command_name()) +
                        (queued ? ": cancelled before it was sent"
                                : ": cancelled after it was sent (its reply will be dropped)"),
                    queued ? RequestState::not_sent : RequestState::sent),
         Resume::from_cancel_handler);
}

// ---- completion ----------------------------------------------------------------------------

void Multiplexer::finish(Slot* slot, std::exception_ptr error, Resume resume) noexcept {
  slot->completed = true;
  slot->error = std::move(error);
  if (slot->error) {
    const ErrorKind kind = classify(slot->error);
    if (kind == ErrorKind::cancelled) {
      slot->permit.ignore();
    } else {
      ++stats_.failures;
      slot->permit.record(kind);
    }
  }
  events_.request_finished();
  if (!slot->waiter) {
    if (!slot->owned && !slot->in_fifo) recycle(slot);
    return;
  }
  events_.resume(*slot, resume);
}

void Multiplexer::finish_ok(Slot* slot, Resume resume) noexcept {
  // The breaker hears about error replies that say something about the endpoint
  // (LOADING, BUSY, MASTERDOWN); business errors (WRONGTYPE) are ignored (core docs).
  const Reply* error_reply = nullptr;
  if (slot->mode == ReplyMode::count) {
    if (slot->first_error != Slot::kNoError) error_reply = &slot->reply;
  } else if (slot->mode == ReplyMode::multi) {
    for (const auto& r : slot->replies) {
      if (r.is_error()) {
        error_reply = &r;
        break;
      }
    }
  } else if (slot->reply.is_error()) {
    error_reply = &slot->reply;
  }
  if (error_reply != nullptr) {
    slot->permit.record(classify_error_prefix(error_reply->error_prefix()));
  } else {
    slot->permit.success();
  }
  finish(slot, nullptr, resume);
}

// ---- write path ----------------------------------------------------------------------------

std::string_view Multiplexer::prepare_write(Clock::time_point now) noexcept {
  if (pending_.empty()) return {};
  std::swap(pending_, writing_);
  pending_.clear();
  if (outstanding() == 0) waiting_since_ = now;
  for (std::size_t i = outstanding(); i < fifo_.size(); ++i) {
    fifo_[i]->phase = Slot::Phase::writing;
    fifo_[i]->written_at = now;
  }
  writing_count_ += queued_count_;
  queued_count_ = 0;
  return writing_;
}

void Multiplexer::write_done() noexcept {
  const std::size_t end = outstanding();
  for (std::size_t i = end - writing_count_; i < end; ++i) fifo_[i]->phase = Slot::Phase::sent;
  writing_count_ = 0;
  writing_.clear();
}

// ---- read path -----------------------------------------------------------------------------

void Multiplexer::feed(const char* data, std::size_t size, Clock::time_point now) {
  last_read_ = now;
  parser_.feed(data, size);
}

bool Multiplexer::deliver(Reply& reply) {
  if (outstanding() == 0) return false;  // a reply nobody is waiting for: out of sync
  Slot* slot = fifo_.front();
  ++stats_.replies;
  if (!slot->completed) {
    switch (slot->mode) {
      case ReplyMode::count:
        if (reply.is_error()) {
          if (slot->first_error == Slot::kNoError) {
            slot->first_error = slot->received;
            swap(slot->reply, reply);
          }
        } else if (!reply.is_nil()) {
          ++slot->added;
        }
        break;
      case ReplyMode::multi:
        slot->replies.push_back(std::move(reply));
        break;
      case ReplyMode::single:
        if (&reply != &slot->reply) swap(slot->reply, reply);  // its old buffers are reused
        break;
    }
  }
  if (++slot->received < slot->expected) return true;
  fifo_.pop_front();
  slot->in_fifo = false;
  if (slot->phase == Slot::Phase::writing) --writing_count_;
  waiting_since_ = last_read_;
  if (slot->completed) {
    ++stats_.dropped_replies;
    if (!slot->owned) recycle(slot);
  } else if (slot->internal) {
    slot->permit.ignore();
    recycle(slot);
  } else {
    if (round_trip_ != nullptr) round_trip_->observe(last_read_ - slot->written_at);
    finish_ok(slot, Resume::inline_);
  }
  return true;
}

// ---- failures ------------------------------------------------------------------------------

Multiplexer::Lost Multiplexer::fail_in_flight(const std::string& context) noexcept {
  Lost lost{outstanding(), false};
  // One lost connection is one failure of the endpoint, however many requests were in
  // flight on it: only the first request's failure reaches the breaker (docs/decisions.md).
  for (std::size_t i = 0; i < lost.in_flight; ++i) {
    Slot* slot = fifo_.front();
    fifo_.pop_front();
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      if (slot->permit.active()) {
        if (lost.reported) slot->permit.ignore();
        lost.reported = true;
      }
      finish(slot, make_error(errc::connection_lost, context, RequestState::sent));
    }
  }
  writing_count_ = 0;
  writing_.clear();
  return lost;
}

void Multiplexer::fail_all(errc code, std::string_view why) noexcept {
  const std::string context = "Redis " + description_ + ": " + std::string(why);
  while (!fifo_.empty()) {
    Slot* slot = fifo_.front();
    fifo_.pop_front();
    const bool queued = slot->phase == Slot::Phase::queued;
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      finish(slot, make_error(code, context, queued ? RequestState::not_sent : RequestState::sent));
    }
  }
  queued_count_ = writing_count_ = 0;
  pending_.clear();
  writing_.clear();
}

void Multiplexer::fail_queued(const std::exception_ptr& error) noexcept {
  while (queued_count_ > 0) {
    Slot* slot = fifo_.back();
    fifo_.pop_back();
    --queued_count_;
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      finish(slot, error);
    }
  }
  pending_.clear();
}

Clock::time_point Multiplexer::sweep(Clock::time_point now) {
  Clock::time_point next = kNoDeadline;
  expired_.clear();
  for (Slot* slot : fifo_) {
    if (slot->completed || slot->internal) continue;
    if (slot->deadline <= now) {
      expired_.push_back(slot);
    } else {
      next = std::min(next, slot->deadline);
    }
  }
  // Expired queued requests leave the send buffer in one compaction pass (not one erase each:
  // during an outage thousands may expire together).
  bool any_queued = false;
  for (Slot* slot : expired_) any_queued = any_queued || slot->phase == Slot::Phase::queued;
  if (any_queued) {
    std::string kept;
    kept.reserve(pending_.size());
    std::size_t offset = 0;
    const std::size_t first_queued = outstanding();
    std::size_t out = first_queued;
    for (std::size_t i = first_queued; i < fifo_.size(); ++i) {
      Slot* slot = fifo_[i];
      const bool expired = !slot->completed && !slot->internal && slot->deadline <= now;
      if (!expired) {
        kept.append(pending_, offset, slot->bytes);
        fifo_[out++] = slot;
      } else {
        slot->in_fifo = false;
        --queued_count_;
      }
      offset += slot->bytes;
    }
    fifo_.resize(out);
    pending_.swap(kept);
  }
  for (Slot* slot : expired_) {
    ++stats_.timeouts;
    const bool queued = slot->phase == Slot::Phase::queued;
    const std::string context =
        "Redis " + std::string(slot->command_name()) + " " + description_ +
        (queued ? ": not sent within the command timeout (no connection)"
                : ": no reply within the command timeout (its reply will be dropped)");
    finish(slot, make_error(queued ? errc::write_timeout : errc::request_timeout, context,
                            queued ? RequestState::not_sent : RequestState::sent));
  }
  return next;
}

std::size_t Multiplexer::active() const noexcept {
  std::size_t n = 0;
  for (const Slot* slot : fifo_) n += (!slot->completed && !slot->internal) ? 1 : 0;
  return n;
}

}  // namespace trading_shared::redis::detail
