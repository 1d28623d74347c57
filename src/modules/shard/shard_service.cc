#include "shard_service.h"

#include <fmt/format.h>

#include "commit_tracing.h"
#include "infrachat/core/validation.h"

namespace infrachat::shard {

namespace {

constexpr std::uint32_t kDefaultHistoryLimit = 100;
constexpr std::uint32_t kMaxHistoryLimit = 1000;
constexpr std::size_t kMaxTopicBytes = 256;

// What a request needs to know about a channel and the caller's relation to it.
struct ChannelAccess {
  std::int64_t id = 0;
  v1::Visibility visibility = v1::PUBLIC;
  std::uint64_t head_seq = 0;
  bool is_member = false;
  bool is_invited = false;
};

Error NoSuchChannel(const std::string& channel) {
  return MakeError(Code::kNotFound, "no such channel: " + channel);
}

Result<ChannelAccess> LoadAccess(pqxx::transaction_base& tx, const std::string& channel,
                                 std::uint64_t user_id) {
  auto rows = tx.exec_params(
      "SELECT c.id, c.visibility, c.head_seq,"
      " EXISTS (SELECT 1 FROM memberships m WHERE m.channel_id = c.id AND m.user_id = $2),"
      " EXISTS (SELECT 1 FROM invites i WHERE i.channel_id = c.id AND i.user_id = $2)"
      " FROM channels c WHERE c.name = $1",
      channel, static_cast<std::int64_t>(user_id));
  if (rows.empty()) return NoSuchChannel(channel);
  ChannelAccess a;
  a.id = rows[0][0].as<std::int64_t>();
  a.visibility = static_cast<v1::Visibility>(rows[0][1].as<int>());
  a.head_seq = rows[0][2].as<std::uint64_t>();
  a.is_member = rows[0][3].as<bool>();
  a.is_invited = rows[0][4].as<bool>();
  return a;
}

// A private channel exists, for a user, only while they are a member or hold an invite: anyone
// else gets the answer an unknown name gets, so that private names cannot be probed
// (docs/adr/0008-private-channel-names.md). Public channels are listed to everyone anyway.
bool HiddenFrom(const ChannelAccess& access) {
  return access.visibility == v1::PRIVATE && !access.is_member && !access.is_invited;
}

// LoadAccess, with private channels hidden from users who may not know of them.
Result<ChannelAccess> LoadVisibleAccess(pqxx::transaction_base& tx, const std::string& channel,
                                        std::uint64_t user_id) {
  auto access = LoadAccess(tx, channel, user_id);
  if (access.ok() && HiddenFrom(*access)) return NoSuchChannel(channel);
  return access;
}

Result<ChannelAccess> RequireMember(pqxx::transaction_base& tx, const std::string& channel,
                                    std::uint64_t user_id) {
  auto access = LoadVisibleAccess(tx, channel, user_id);
  if (access.ok() && !access->is_member) {
    return MakeError(Code::kPermissionDenied, "not a member of channel " + channel);
  }
  return access;
}

constexpr const char* kChannelColumns =
    "c.name, c.visibility, c.topic, c.head_seq,"
    " (SELECT count(*) FROM memberships m WHERE m.channel_id = c.id),"
    " extract(epoch FROM c.created_at)::bigint,"
    " EXISTS (SELECT 1 FROM memberships m WHERE m.channel_id = c.id AND m.user_id = $1)";

v1::Channel ChannelFromRow(const pqxx::row& row) {
  v1::Channel c;
  c.set_name(row[0].as<std::string>());
  c.set_visibility(static_cast<v1::Visibility>(row[1].as<int>()));
  c.set_topic(row[2].as<std::string>());
  c.set_head_seq(row[3].as<std::uint64_t>());
  c.set_member_count(row[4].as<std::uint64_t>());
  c.set_created_at_unix(row[5].as<std::int64_t>());
  c.set_is_member(row[6].as<bool>());
  return c;
}

Result<v1::Channel> LoadChannel(pqxx::transaction_base& tx, const std::string& name,
                                std::uint64_t user_id) {
  auto rows =
      tx.exec_params(fmt::format("SELECT {} FROM channels c WHERE c.name = $2", kChannelColumns),
                     static_cast<std::int64_t>(user_id), name);
  if (rows.empty()) return MakeError(Code::kNotFound, "no such channel: " + name);
  return ChannelFromRow(rows[0]);
}

v1::ChatMessage MessageFromRow(const std::string& channel, const pqxx::row& row) {
  v1::ChatMessage m;
  m.set_channel(channel);
  m.set_seq(row[0].as<std::uint64_t>());
  m.set_sender_id(row[1].as<std::uint64_t>());
  m.set_sender(row[2].as<std::string>());
  m.set_body(row[3].as<std::string>());
  m.set_sent_at_unix_ms(row[4].as<std::int64_t>());
  m.set_client_msg_id(row[5].as<std::string>());
  return m;
}

std::vector<v1::ChatMessage> ReadMessages(pqxx::transaction_base& tx, std::int64_t channel_id,
                                          const std::string& channel, std::uint64_t after_seq,
                                          std::uint32_t limit) {
  auto rows = tx.exec_params(
      "SELECT seq, sender_id, sender, body, sent_at_ms, client_msg_id FROM messages"
      " WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
      channel_id, static_cast<std::int64_t>(after_seq), static_cast<std::int64_t>(limit));
  std::vector<v1::ChatMessage> out;
  out.reserve(rows.size());
  for (const auto& row : rows) out.push_back(MessageFromRow(channel, row));
  return out;
}

}  // namespace

ShardService::ShardService(ShardServiceOptions options, pg::ConnectionPool* pool,
                           GroupCommitter* committer, EventBus* bus)
    : options_(options), pool_(pool), committer_(committer), bus_(bus) {}

void ShardService::SendAsync(const CallContext& call, SendCommand command, SendCallback done) {
  // The shard is a boundary of its own once it runs in another process: validate again.
  auto name = NormalizeChannelName(command.channel);
  if (!name.ok()) return done(name.error());
  if (auto r = ValidateBody(command.body, options_.max_body_bytes); !r.ok()) return done(r.error());
  if (auto r = ValidateClientMsgId(command.client_msg_id); !r.ok()) return done(r.error());
  command.channel = std::move(name).value();
  committer_->Submit(std::move(command), std::move(done),
                     StartSpan(kCommitSpanName, SpanKind::kInternal, call.span()));
}

Result<v1::Channel> ShardService::CreateChannel(const CallContext& call, const Principal& caller,
                                                const v1::CreateChannelRequest& request) {
  auto name = NormalizeChannelName(request.name());
  if (!name.ok()) return name.error();
  if (request.topic().size() > kMaxTopicBytes || !IsValidUtf8(request.topic())) {
    return MakeError(Code::kInvalidArgument, "topic must be valid UTF-8 of at most 256 bytes");
  }
  if (options_.homed_here && !options_.homed_here(*name)) {
    return MakeError(Code::kFailedPrecondition,
                     "channel " + *name + " belongs to another region: create it there");
  }
  const v1::Visibility visibility = request.visibility() == v1::PRIVATE ? v1::PRIVATE : v1::PUBLIC;
  auto result = pool_->With<v1::Channel>(call, [&](pqxx::connection& conn) -> Result<v1::Channel> {
    pqxx::work tx(conn);
    auto inserted = tx.exec_params(
        "INSERT INTO channels (name, visibility, topic, created_by) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO NOTHING RETURNING id",
        *name, static_cast<int>(visibility), request.topic(),
        static_cast<std::int64_t>(caller.user_id));
    if (inserted.empty()) return MakeError(Code::kAlreadyExists, "channel exists: " + *name);
    tx.exec_params("INSERT INTO memberships (channel_id, user_id, username) VALUES ($1, $2, $3)",
                   inserted[0][0].as<std::int64_t>(), static_cast<std::int64_t>(caller.user_id),
                   caller.username);
    auto channel = LoadChannel(tx, *name, caller.user_id);
    tx.commit();
    return channel;
  });
  if (result.ok()) bus_->Publish(MembershipChanged{*name, caller.user_id, caller.username, true});
  return result;
}

Result<v1::Channel> ShardService::JoinChannel(const CallContext& call, const Principal& caller,
                                              std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  bool joined_now = false;
  auto result = pool_->With<v1::Channel>(call, [&](pqxx::connection& conn) -> Result<v1::Channel> {
    pqxx::work tx(conn);
    // Without an invite a private channel is not there (an invitation is how one learns of it).
    auto access = LoadVisibleAccess(tx, *name, caller.user_id);
    if (!access.ok()) return access.error();
    if (!access->is_member) {
      auto ins = tx.exec_params(
          "INSERT INTO memberships (channel_id, user_id, username) VALUES ($1, $2, $3)"
          " ON CONFLICT DO NOTHING",
          access->id, static_cast<std::int64_t>(caller.user_id), caller.username);
      joined_now = ins.affected_rows() == 1;
    }
    auto result = LoadChannel(tx, *name, caller.user_id);
    tx.commit();
    return result;
  });
  if (result.ok() && joined_now) {
    bus_->Publish(MembershipChanged{*name, caller.user_id, caller.username, true});
  }
  return result;
}

Result<void> ShardService::LeaveChannel(const CallContext& call, const Principal& caller,
                                        std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  auto result = pool_->With<bool>(call, [&](pqxx::connection& conn) -> Result<bool> {
    pqxx::work tx(conn);
    auto access = LoadVisibleAccess(tx, *name, caller.user_id);
    if (!access.ok()) return access.error();
    // Leaving also drops a pending invite: a private channel needs a new one to come back.
    tx.exec_params("DELETE FROM invites WHERE channel_id = $1 AND user_id = $2", access->id,
                   static_cast<std::int64_t>(caller.user_id));
    auto del = tx.exec_params("DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2",
                              access->id, static_cast<std::int64_t>(caller.user_id));
    tx.commit();
    return del.affected_rows() == 1;
  });
  if (!result.ok()) return result.error();
  // Published even if the caller was not a member, so that live delivery stops in any case.
  bus_->Publish(MembershipChanged{*name, caller.user_id, caller.username, false});
  return Ok();
}

Result<void> ShardService::InviteMember(const CallContext& call, const Principal& caller,
                                        std::string_view channel, std::uint64_t invitee_id,
                                        std::string_view invitee_username) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  auto result = pool_->With<bool>(call, [&](pqxx::connection& conn) -> Result<bool> {
    pqxx::work tx(conn);
    auto access = RequireMember(tx, *name, caller.user_id);
    if (!access.ok()) return access.error();
    tx.exec_params(
        "INSERT INTO invites (channel_id, user_id, invited_by) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        access->id, static_cast<std::int64_t>(invitee_id),
        static_cast<std::int64_t>(caller.user_id));
    tx.commit();
    return true;
  });
  if (!result.ok()) return result.error();
  return Ok();
}

Result<std::vector<v1::Channel>> ShardService::ListChannels(const CallContext& call,
                                                            const Principal& caller) {
  return pool_->With<std::vector<v1::Channel>>(
      call, [&](pqxx::connection& conn) -> Result<std::vector<v1::Channel>> {
        pqxx::read_transaction tx(conn);
        auto rows = tx.exec_params(
            fmt::format(
                "SELECT {} FROM channels c WHERE c.visibility = 1 OR EXISTS"
                " (SELECT 1 FROM memberships m WHERE m.channel_id = c.id AND m.user_id = $1)"
                " ORDER BY c.name LIMIT 1000",
                kChannelColumns),
            static_cast<std::int64_t>(caller.user_id));
        std::vector<v1::Channel> out;
        for (const auto& row : rows) out.push_back(ChannelFromRow(row));
        return out;
      });
}

Result<std::vector<v1::Member>> ShardService::ListMembers(const CallContext& call,
                                                          const Principal& caller,
                                                          std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  return pool_->With<std::vector<v1::Member>>(
      call, [&](pqxx::connection& conn) -> Result<std::vector<v1::Member>> {
        pqxx::read_transaction tx(conn);
        auto access = RequireMember(tx, *name, caller.user_id);
        if (!access.ok()) return access.error();
        auto rows = tx.exec_params(
            "SELECT user_id, username, delivered_seq, read_seq FROM memberships"
            " WHERE channel_id = $1 ORDER BY username LIMIT 10000",
            access->id);
        std::vector<v1::Member> out;
        for (const auto& row : rows) {
          v1::Member m;
          m.set_user_id(row[0].as<std::uint64_t>());
          m.set_username(row[1].as<std::string>());
          m.set_delivered_seq(row[2].as<std::uint64_t>());
          m.set_read_seq(row[3].as<std::uint64_t>());
          out.push_back(std::move(m));
        }
        return out;
      });
}

Result<v1::GetHistoryResponse> ShardService::GetHistory(const CallContext& call,
                                                        const Principal& caller,
                                                        const v1::GetHistoryRequest& request) {
  auto name = NormalizeChannelName(request.channel());
  if (!name.ok()) return name.error();
  std::uint32_t limit = request.limit() == 0 ? kDefaultHistoryLimit : request.limit();
  if (limit > kMaxHistoryLimit) limit = kMaxHistoryLimit;
  return pool_->With<v1::GetHistoryResponse>(
      call, [&](pqxx::connection& conn) -> Result<v1::GetHistoryResponse> {
        pqxx::read_transaction tx(conn);
        auto access = RequireMember(tx, *name, caller.user_id);
        if (!access.ok()) return access.error();
        v1::GetHistoryResponse response;
        response.set_head_seq(access->head_seq);
        std::vector<v1::ChatMessage> messages;
        if (request.has_before_seq()) {
          // The newest `limit` messages before before_seq, returned oldest first. A before_seq
          // beyond the head (e.g. UINT64_MAX for "the latest") means the newest messages.
          const std::uint64_t before = std::min(request.before_seq(), access->head_seq + 1);
          const std::uint64_t after =
              std::max<std::uint64_t>(request.after_seq(), before > limit ? before - limit - 1 : 0);
          messages = ReadMessages(tx, access->id, *name, after, limit);
          std::erase_if(messages, [&](const v1::ChatMessage& m) { return m.seq() >= before; });
        } else {
          messages = ReadMessages(tx, access->id, *name, request.after_seq(), limit);
        }
        for (auto& m : messages) *response.add_messages() = std::move(m);
        return response;
      });
}

Result<std::uint64_t> ShardService::AuthorizeSubscribe(const CallContext& call,
                                                       const Principal& caller,
                                                       std::string_view channel) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  return pool_->With<std::uint64_t>(call, [&](pqxx::connection& conn) -> Result<std::uint64_t> {
    pqxx::read_transaction tx(conn);
    auto access = RequireMember(tx, *name, caller.user_id);
    if (!access.ok()) return access.error();
    return access->head_seq;
  });
}

Result<bool> ShardService::RecordAck(const CallContext& call, const Principal& caller,
                                     std::string_view channel, std::uint64_t seq,
                                     v1::AckKind kind) {
  auto name = NormalizeChannelName(channel);
  if (!name.ok()) return name.error();
  if (kind != v1::DELIVERED && kind != v1::READ) {
    return MakeError(Code::kInvalidArgument, "ack kind must be DELIVERED or READ");
  }
  auto moved = pool_->With<bool>(call, [&](pqxx::connection& conn) -> Result<bool> {
    pqxx::work tx(conn);
    auto access = RequireMember(tx, *name, caller.user_id);
    if (!access.ok()) return access.error();
    if (seq == 0 || seq > access->head_seq) {
      return MakeError(Code::kOutOfRange,
                       fmt::format("seq {} is not a message of channel {} (head {})", seq, *name,
                                   access->head_seq));
    }
    // Positions only move forward; READ implies DELIVERED.
    const char* sql =
        kind == v1::READ
            ? "UPDATE memberships SET read_seq = $3, delivered_seq = GREATEST(delivered_seq, $3)"
              " WHERE channel_id = $1 AND user_id = $2 AND read_seq < $3"
            : "UPDATE memberships SET delivered_seq = $3"
              " WHERE channel_id = $1 AND user_id = $2 AND delivered_seq < $3";
    auto updated = tx.exec_params(sql, access->id, static_cast<std::int64_t>(caller.user_id),
                                  static_cast<std::int64_t>(seq));
    tx.commit();
    return updated.affected_rows() == 1;
  });
  if (moved.ok() && *moved) {
    v1::Receipt receipt;
    receipt.set_channel(*name);
    receipt.set_user_id(caller.user_id);
    receipt.set_username(caller.username);
    receipt.set_seq(seq);
    receipt.set_kind(kind);
    bus_->Publish(std::move(receipt));
  }
  return moved;
}

Result<std::vector<v1::ChatMessage>> ShardService::ReadLog(const CallContext& call,
                                                           std::string_view channel,
                                                           std::uint64_t reader_id,
                                                           std::uint64_t after_seq,
                                                           std::uint32_t limit) {
  const std::string name(channel);
  return pool_->With<std::vector<v1::ChatMessage>>(
      call, [&](pqxx::connection& conn) -> Result<std::vector<v1::ChatMessage>> {
        pqxx::read_transaction tx(conn);
        auto access = RequireMember(tx, name, reader_id);  // same snapshot as the messages
        if (!access.ok()) return access.error();
        return ReadMessages(tx, access->id, name, after_seq, std::min(limit, kMaxHistoryLimit));
      });
}

Result<std::vector<ShardLease>> ShardService::LiveShards(const CallContext& call) {
  return pool_->With<std::vector<ShardLease>>(
      call, [&](pqxx::connection& conn) -> Result<std::vector<ShardLease>> {
        pqxx::read_transaction tx(conn);
        auto rows = tx.exec(
            "SELECT shard_id, address, epoch FROM shard_leases WHERE expires_at > now()"
            " ORDER BY shard_id");
        std::vector<ShardLease> out;
        for (const auto& row : rows) {
          out.push_back(ShardLease{row[0].as<std::string>(), row[1].as<std::string>(),
                                   row[2].as<std::uint64_t>()});
        }
        return out;
      });
}

}  // namespace infrachat::shard
