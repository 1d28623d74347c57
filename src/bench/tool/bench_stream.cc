#include "bench_stream.h"

#include <charconv>

#include "infrachat/core/encoded_frame.h"

namespace infrachat::bench {

namespace {

// One client batch carries at most this many frames, and at most half the server's frame limit
// in bytes (the rest is margin for the per-frame overhead of the batch's encoding).
constexpr int kMaxClientBatchFrames = 256;

std::size_t MaxFrameBytes(const std::multimap<grpc::string_ref, grpc::string_ref>& headers) {
  auto it = headers.find("infrachat-max-frame-bytes");
  std::size_t value = 0;
  if (it != headers.end()) std::from_chars(it->second.begin(), it->second.end(), value);
  return value;
}

}  // namespace

BenchStream::BenchStream(StreamGroup* group, std::size_t index, v1::ChatService::Stub* stub,
                         const std::string& access_token)
    : group_(group), index_(index), stub_(stub) {
  if (!access_token.empty()) context_.AddMetadata("authorization", "Bearer " + access_token);
  if (group->accept_batches()) {
    context_.AddMetadata(kHeaderCapabilities, CapabilityList(true, true));
  }
}

void BenchStream::Start() {
  started_at_ = std::chrono::steady_clock::now();
  stub_->async()->Connect(&context_, this);
  // Without a hold, gRPC may complete the call (OnDone) as soon as reads end, while another
  // thread is about to write; the hold is released once no write can start any more.
  AddHold();
  StartRead(&in_);
  const v1::ClientFrame* first = nullptr;
  {
    std::lock_guard lock(mu_);
    started_ = true;
    if (!out_.empty()) {
      writing_ = true;
      first = NextWriteLocked();
    }
  }
  if (first != nullptr) StartWrite(first);
  StartCall();
}

bool BenchStream::Write(v1::ClientFrame frame) {
  const v1::ClientFrame* next = nullptr;
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    out_.push_back(std::move(frame));
    if (!started_ || writing_) return true;
    writing_ = true;
    next = NextWriteLocked();
  }
  StartWrite(next);
  return true;
}

const v1::ClientFrame* BenchStream::NextWriteLocked() {
  if (out_.size() == 1 || !server_takes_batches_.load(std::memory_order_acquire)) {
    write_ = std::move(out_.front());
    out_.pop_front();
    write_frames_ = 1;
    return &write_;
  }
  v1::ClientFrameBatch batch;
  std::size_t bytes = 0;
  while (!out_.empty() && batch.frames_size() < kMaxClientBatchFrames) {
    const std::size_t size = out_.front().ByteSizeLong() + 8;  // + tag and length
    if (batch.frames_size() > 0 && bytes + size > batch_bytes_) break;
    bytes += size;
    *batch.add_frames() = std::move(out_.front());
    out_.pop_front();
  }
  write_frames_ = static_cast<std::size_t>(batch.frames_size());
  if (write_frames_ == 1) {
    write_ = std::move(*batch.mutable_frames(0));  // too big to share a batch: alone
  } else {
    *write_.mutable_batch() = std::move(batch);
  }
  return &write_;
}

bool BenchStream::Subscribe(const std::string& channel, std::optional<std::uint64_t> after_seq) {
  v1::ClientFrame frame;
  auto* subscribe = frame.mutable_subscribe();
  subscribe->set_channel(channel);
  if (after_seq) subscribe->set_after_seq(*after_seq);
  return Write(std::move(frame));
}

bool BenchStream::Send(const std::string& channel, std::string client_msg_id, std::string body) {
  v1::ClientFrame frame;
  auto* send = frame.mutable_send();
  send->set_channel(channel);
  send->set_client_msg_id(std::move(client_msg_id));
  send->set_body(std::move(body));
  return Write(std::move(frame));
}

void BenchStream::Cancel() {
  cancelled_.store(true, std::memory_order_release);
  context_.TryCancel();
}

std::size_t BenchStream::queued() const {
  std::lock_guard lock(mu_);
  return out_.size() + (writing_ ? write_frames_ : 0);
}

void BenchStream::OnWriteDone(bool ok) {
  const v1::ClientFrame* next = nullptr;
  bool release = false;
  {
    std::lock_guard lock(mu_);
    write_frames_ = 0;
    if (!ok) closed_ = true;
    if (!closed_ && !out_.empty()) {
      next = NextWriteLocked();
    } else {
      writing_ = false;
      if (closed_ && !hold_released_) release = hold_released_ = true;
    }
  }
  if (next != nullptr) StartWrite(next);
  if (release) RemoveHold();
}

void BenchStream::OnReadInitialMetadataDone(bool ok) {
  if (!ok || !group_->accept_batches()) return;
  const auto& headers = context_.GetServerInitialMetadata();
  const std::size_t limit = MaxFrameBytes(headers);
  if (limit == 0 || !HasCapability(headers, kCapabilityClientBatch)) return;
  std::lock_guard lock(mu_);
  batch_bytes_ = limit / 2;
  server_takes_batches_.store(true, std::memory_order_release);
}

void BenchStream::OnReadDone(bool ok) {
  if (ok) {
    if (in_.has_batch()) {
      for (v1::ServerFrame& frame : *in_.mutable_batch()->mutable_frames()) {
        group_->handler()->OnFrame(*this, frame);
      }
    } else {
      group_->handler()->OnFrame(*this, in_);
    }
    in_.Clear();
    StartRead(&in_);
    return;
  }
  bool release = false;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    if (!writing_ && !hold_released_) release = hold_released_ = true;
  }
  if (release) RemoveHold();
}

void BenchStream::OnDone(const grpc::Status& status) {
  status_ = status;
  ended_.store(true, std::memory_order_release);
  group_->handler()->OnEnd(*this, status);
  group_->StreamEnded();  // last use of anything: the group may destroy this stream right after
}

namespace {

std::shared_ptr<grpc::Channel> MakeConnection(const std::string& target, std::size_t number) {
  grpc::ChannelArguments args;
  // Channels with equal arguments share subchannels (one TCP connection) through the global
  // pool; a local pool per channel gives every channel its own connection, like a separate client.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("infrachat.bench.connection", static_cast<int>(number));
  args.SetMaxReceiveMessageSize(4 * 1024 * 1024);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

StreamGroup::StreamGroup(std::string target, std::size_t streams_per_connection,
                         StreamHandler* handler, bool accept_batches)
    : target_(std::move(target)),
      per_connection_(streams_per_connection == 0 ? 1 : streams_per_connection),
      handler_(handler),
      accept_batches_(accept_batches) {}

StreamGroup::~StreamGroup() { CancelAndWait(std::chrono::hours(24)); }

BenchStream& StreamGroup::Add(const std::string& access_token) {
  const std::size_t index = streams_.size();
  if (index % per_connection_ == 0) {
    channels_.push_back(MakeConnection(target_, channels_.size()));
    stubs_.push_back(v1::ChatService::NewStub(channels_.back()));
  }
  streams_.push_back(std::make_unique<BenchStream>(this, index, stubs_.back().get(), access_token));
  return *streams_.back();
}

void StreamGroup::Start(std::size_t index) {
  ++started_;
  streams_[index]->Start();
}

void StreamGroup::StartAll() {
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    if (streams_[i]->started_at_ == std::chrono::steady_clock::time_point{}) Start(i);
  }
}

std::size_t StreamGroup::ended() const {
  std::lock_guard lock(mu_);
  return ended_;
}

void StreamGroup::CancelAll() {
  for (auto& stream : streams_) {
    if (stream->started_at_ != std::chrono::steady_clock::time_point{} && !stream->ended()) {
      stream->Cancel();
    }
  }
}

bool StreamGroup::WaitAllEnded(std::chrono::steady_clock::duration timeout) {
  std::unique_lock lock(mu_);
  return ended_cv_.wait_for(lock, timeout, [&] { return ended_ >= started_; });
}

bool StreamGroup::CancelAndWait(std::chrono::steady_clock::duration timeout) {
  CancelAll();
  return WaitAllEnded(timeout);
}

void StreamGroup::StreamEnded() {
  std::lock_guard lock(mu_);
  ++ended_;
  ended_cv_.notify_all();
}

}  // namespace infrachat::bench
