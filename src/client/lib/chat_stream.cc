#include "infrachat/client/chat_stream.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstdlib>

namespace infrachat::client {

namespace {

// A positive decimal number, or nullopt.
std::optional<double> PositiveNumber(const std::map<std::string, std::string>& headers,
                                     const std::string& key) {
  auto it = headers.find(key);
  if (it == headers.end() || it->second.empty()) return std::nullopt;
  const std::string& text = it->second;
  if (text.find_first_not_of("0123456789.") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !(value > 0) || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::uint32_t> PositiveCount(const std::map<std::string, std::string>& headers,
                                           const std::string& key) {
  auto it = headers.find(key);
  if (it == headers.end()) return std::nullopt;
  if (it->second.empty() || it->second.size() > 10 ||
      it->second.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  const unsigned long long value = std::stoull(it->second);
  if (value == 0 || value > 0xFFFFFFFFull) return std::nullopt;
  return static_cast<std::uint32_t>(value);
}

}  // namespace

StreamLimits ParseStreamLimits(const std::map<std::string, std::string>& headers) {
  StreamLimits limits;
  if (auto v = PositiveNumber(headers, "infrachat-send-rate-per-s")) {
    limits.send_rate_per_s = *v;
    limits.announced = true;
  }
  if (auto v = PositiveCount(headers, "infrachat-send-burst")) {
    limits.send_burst = *v;
    limits.announced = true;
  }
  if (auto v = PositiveCount(headers, "infrachat-max-inflight-sends")) {
    limits.max_inflight_sends = *v;
    limits.announced = true;
  }
  if (auto v = PositiveCount(headers, "infrachat-max-body-bytes")) {
    limits.max_body_bytes = *v;
    limits.announced = true;
  }
  if (auto v = PositiveCount(headers, "infrachat-max-frame-bytes")) {
    limits.max_frame_bytes = *v;
    limits.announced = true;
  }
  return limits;
}

ChatStream::ChatStream(std::shared_ptr<grpc::Channel> channel, const std::string& access_token,
                       ChatStreamOptions options)
    : options_(std::move(options)), context_(std::make_unique<grpc::ClientContext>()) {
  if (!access_token.empty()) context_->AddMetadata("authorization", "Bearer " + access_token);
  if (options_.accept_batches) context_->AddMetadata("infrachat-capabilities", "batch");
  for (const auto& [key, value] : options_.metadata) context_->AddMetadata(key, value);
  // Starting the call may block while the channel connects, so the reader thread does it.
  reader_ = std::thread(
      [this, channel = std::move(channel)]() mutable { ReaderMain(std::move(channel)); });
}

ChatStream::~ChatStream() {
  if (!ended()) context_->TryCancel();
  {
    std::lock_guard lock(write_mu_);
    write_closed_ = true;
  }
  write_cv_.notify_all();
  if (reader_.joinable()) reader_.join();
}

void ChatStream::ReaderMain(std::shared_ptr<grpc::Channel> channel) {
  auto stub = v1::ChatService::NewStub(channel);
  auto stream = stub->Connect(context_.get());
  {
    std::lock_guard lock(write_mu_);
    stream_ = std::move(stream);
    started_ = true;
  }
  write_cv_.notify_all();

  // The server's initial metadata carries the stream's limits; it comes before the first frame
  // (or with it, from an older server). Writes may go on meanwhile.
  stream_->WaitForInitialMetadata();
  {
    std::map<std::string, std::string> headers;
    for (const auto& [key, value] : context_->GetServerInitialMetadata()) {
      headers.emplace(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
    }
    const StreamLimits limits = ParseStreamLimits(headers);
    {
      std::lock_guard lock(read_mu_);
      limits_ = limits;
    }
    if (options_.on_limits) options_.on_limits(limits);
  }

  v1::ServerFrame frame;
  while (stream_->Read(&frame)) {
    if (frame.has_batch()) {
      for (v1::ServerFrame& inner : *frame.mutable_batch()->mutable_frames()) {
        Deliver(std::move(inner));
      }
    } else {
      Deliver(std::move(frame));
    }
    frame.Clear();
  }
  // Taking the write lock waits for a write in progress; none starts after write_closed_.
  {
    std::lock_guard lock(write_mu_);
    write_closed_ = true;
  }
  write_cv_.notify_all();
  const grpc::Status status = stream_->Finish();
  Status final{static_cast<Code>(status.error_code()), status.error_message()};
  {
    std::lock_guard lock(read_mu_);
    final_status_ = final;
  }
  read_cv_.notify_all();
  if (options_.on_end) options_.on_end(final);
}

void ChatStream::Deliver(v1::ServerFrame&& frame) {
  if (options_.on_frame) {
    options_.on_frame(std::move(frame));
    return;
  }
  {
    std::lock_guard lock(read_mu_);
    queue_.push_back(std::move(frame));
  }
  read_cv_.notify_all();
}

bool ChatStream::Write(const v1::ClientFrame& frame) {
  std::unique_lock lock(write_mu_);
  write_cv_.wait(lock, [&] { return started_ || write_closed_; });
  if (write_closed_) return false;
  return stream_->Write(frame);
}

bool ChatStream::CloseWrites() {
  std::unique_lock lock(write_mu_);
  write_cv_.wait(lock, [&] { return started_ || write_closed_; });
  if (write_closed_) return false;
  write_closed_ = true;
  return stream_->WritesDone();
}

bool ChatStream::Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq) {
  v1::ClientFrame frame;
  auto* subscribe = frame.mutable_subscribe();
  subscribe->set_channel(channel);
  if (after_seq) subscribe->set_after_seq(*after_seq);
  return Write(frame);
}

bool ChatStream::Unsubscribe(const std::string& channel) {
  v1::ClientFrame frame;
  frame.mutable_unsubscribe()->set_channel(channel);
  return Write(frame);
}

std::string ChatStream::Send(const std::string& channel, const std::string& body) {
  std::string id = NewClientMsgId();
  if (!Send(channel, id, body)) return {};
  return id;
}

bool ChatStream::Send(const std::string& channel, const std::string& client_msg_id,
                      const std::string& body) {
  v1::ClientFrame frame;
  auto* send = frame.mutable_send();
  send->set_channel(channel);
  send->set_client_msg_id(client_msg_id);
  send->set_body(body);
  return Write(frame);
}

bool ChatStream::Ack(const std::string& channel, std::uint64_t seq, v1::AckKind kind) {
  v1::ClientFrame frame;
  auto* ack = frame.mutable_ack();
  ack->set_channel(channel);
  ack->set_seq(seq);
  ack->set_kind(kind);
  return Write(frame);
}

bool ChatStream::Typing(const std::string& channel) {
  v1::ClientFrame frame;
  frame.mutable_typing()->set_channel(channel);
  return Write(frame);
}

bool ChatStream::Ping(std::uint64_t nonce) {
  v1::ClientFrame frame;
  frame.mutable_ping()->set_nonce(nonce);
  return Write(frame);
}

std::optional<v1::ServerFrame> ChatStream::Next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(read_mu_);
  read_cv_.wait_for(lock, timeout, [&] { return !queue_.empty() || final_status_.has_value(); });
  if (queue_.empty()) return std::nullopt;
  v1::ServerFrame frame = std::move(queue_.front());
  queue_.pop_front();
  return frame;
}

std::optional<v1::ServerFrame> ChatStream::NextOf(v1::ServerFrame::FrameCase kind,
                                                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto frame = Next(std::max(left, std::chrono::milliseconds(0)));
    if (!frame) return std::nullopt;
    if (frame->frame_case() == kind) return frame;
  }
}

std::size_t ChatStream::queued() const {
  std::lock_guard lock(read_mu_);
  return queue_.size();
}

void ChatStream::Cancel() {
  context_->TryCancel();
  {
    std::lock_guard lock(write_mu_);
    if (!started_) write_closed_ = true;
  }
  write_cv_.notify_all();
}

std::optional<StreamLimits> ChatStream::limits() const {
  std::lock_guard lock(read_mu_);
  return limits_;
}

bool ChatStream::ended() const {
  std::lock_guard lock(read_mu_);
  return final_status_.has_value();
}

std::optional<Status> ChatStream::final_status() const {
  std::lock_guard lock(read_mu_);
  return final_status_;
}

std::optional<Status> ChatStream::WaitForEnd(std::chrono::milliseconds timeout) {
  std::unique_lock lock(read_mu_);
  read_cv_.wait_for(lock, timeout, [&] { return final_status_.has_value(); });
  return final_status_;
}

}  // namespace infrachat::client
