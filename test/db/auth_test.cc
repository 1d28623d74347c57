// The auth module against a real PostgreSQL: users, sessions, refresh rotation and reuse
// detection, key bootstrap, and behaviour when the database is down.
#include <catch2/catch.hpp>
#include <chrono>
#include <pqxx/pqxx>
#include <thread>

#include "infrachat/core/module.h"
#include "modules/auth/auth_module.h"
#include "modules/auth/auth_schema.h"
#include "modules/auth/auth_service.h"
#include "modules/auth/key_store.h"
#include "modules/auth/refresh_token.h"
#include "test_db.h"

using namespace infrachat;
using namespace infrachat::auth;

namespace {

// Tests wait as long as it takes: no deadline, never cancelled.
CallContext Call() { return CallContext::Unbounded(); }

struct FakeClock {
  std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  UnixClock fn() {
    return [this] { return now; };
  }
};

DaemonConfig DevConfig() {
  DaemonConfig config;
  config.mode = "development";
  config.auth.argon2_ops_limit = 1;  // fast tests
  config.auth.argon2_mem_limit_kib = 8 * 1024;
  return config;
}

std::unique_ptr<pqxx::connection> Open(const std::string& url) {
  auto conn = pg::Connect(url);
  REQUIRE(conn.ok());
  return std::move(conn).value();
}

struct AuthFixture {
  infrachat::testing::TestDatabase db;
  pg::ConnectionPool pool{db.url(), 4};
  FakeClock clock;
  DaemonConfig config = DevConfig();
  std::unique_ptr<AuthService> service;

  AuthFixture() {
    auto conn = Open(db.url());
    pg::Migrate(*conn, "auth", AuthMigrations());
    service = std::make_unique<AuthService>(&pool, config.auth, ResolveSigningKeys(config, *conn),
                                            clock.fn());
  }

  v1::Session MustRegister(const std::string& username,
                           const std::string& password = "hunter2hunter2") {
    v1::RegisterRequest req;
    req.set_username(username);
    req.set_password(password);
    auto s = service->Register(Call(), req);
    INFO((s.ok() ? std::string() : s.error().message));
    REQUIRE(s.ok());
    return std::move(s).value();
  }

  Result<v1::Session> Login(const std::string& username, const std::string& password) {
    v1::LoginRequest req;
    req.set_username(username);
    req.set_password(password);
    return service->Login(Call(), req);
  }

  Result<v1::Session> Refresh(const std::string& token) {
    v1::RefreshRequest req;
    req.set_refresh_token(token);
    return service->Refresh(Call(), req);
  }

  Result<void> Logout(const std::string& token) {
    v1::LogoutRequest req;
    req.set_refresh_token(token);
    return service->Logout(Call(), req);
  }

  std::string SessionOf(const v1::Session& s) {
    auto p = service->VerifyAccessToken(s.access_token());
    REQUIRE(p.ok());
    return p->session_id;
  }

  bool Active(const std::string& sid) {
    auto r = service->IsSessionActive(Call(), sid);
    REQUIRE(r.ok());
    return *r;
  }

  std::int64_t Count(const std::string& sql) {
    auto conn = Open(db.url());
    pqxx::nontransaction tx(*conn);
    return tx.exec1(sql)[0].as<std::int64_t>();
  }
};

}  // namespace

TEST_CASE_METHOD(AuthFixture, "register then login", "[auth][db]") {
  v1::Session reg = MustRegister("alice");
  CHECK(reg.user_id() > 0);
  CHECK(reg.username() == "alice");
  CHECK(reg.display_name() == "alice");  // default
  CHECK(reg.access_expires_at_unix() == clock.now + config.auth.access_token_ttl_s);
  CHECK(ParseRefreshToken(reg.refresh_token()));

  auto principal = service->VerifyAccessToken(reg.access_token());
  REQUIRE(principal.ok());
  CHECK(principal->user_id == reg.user_id());
  CHECK(principal->username == "alice");
  CHECK(Active(principal->session_id));

  auto login = Login("alice", "hunter2hunter2");
  REQUIRE(login.ok());
  CHECK(login->user_id() == reg.user_id());
  CHECK(login->display_name() == "alice");
  CHECK(SessionOf(*login) != principal->session_id);  // a new session per login
  CHECK(Count("SELECT count(*) FROM sessions") == 2);
  // Only a hash of the refresh secret is stored.
  CHECK(Count("SELECT count(*) FROM sessions WHERE octet_length(refresh_hash) = 32") == 2);
  CHECK(Count("SELECT count(*) FROM users WHERE password_hash LIKE '$argon2id$%'") == 1);

  auto id = service->LookupUserId(Call(), "alice");
  REQUIRE(id.ok());
  CHECK(*id == reg.user_id());
  CHECK(service->LookupUserId(Call(), "nobody").code() == Code::kNotFound);
}

TEST_CASE_METHOD(AuthFixture, "register validates its input", "[auth][db]") {
  auto attempt = [&](const std::string& user, const std::string& password,
                     const std::string& display = "") {
    v1::RegisterRequest req;
    req.set_username(user);
    req.set_password(password);
    req.set_display_name(display);
    return service->Register(Call(), req);
  };
  auto upper = attempt("Alice", "password1");
  CHECK(upper.code() == Code::kInvalidArgument);
  CHECK(upper.error().message.find("lower-case") != std::string::npos);
  CHECK(upper.error().message.find("\"alice\"") != std::string::npos);
  CHECK(attempt("a", "password1").code() == Code::kInvalidArgument);
  CHECK(attempt("bob", "short").code() == Code::kInvalidArgument);
  CHECK(attempt("bob", std::string(1025, 'p')).code() == Code::kInvalidArgument);
  CHECK(attempt("bob", "password1", std::string(65, 'x')).code() == Code::kInvalidArgument);
  CHECK(attempt("bob", "password1", "bad\xff utf8").code() == Code::kInvalidArgument);
  CHECK(attempt("bob", "password1", "esc\x1b[2J").code() == Code::kInvalidArgument);
  CHECK(Count("SELECT count(*) FROM users") == 0);

  std::string sixty_four_umlauts;
  for (int i = 0; i < 64; ++i) sixty_four_umlauts += "\xc3\xbc";  // 'ü', 2 bytes each
  auto ok = attempt("bob", std::string(1024, 'p'), sixty_four_umlauts);
  REQUIRE(ok.ok());
  CHECK(ok->display_name() == sixty_four_umlauts);
}

TEST_CASE_METHOD(AuthFixture, "duplicate username is ALREADY_EXISTS", "[auth][db]") {
  MustRegister("carol");
  v1::RegisterRequest req;
  req.set_username("carol");
  req.set_password("another password");
  auto again = service->Register(Call(), req);
  CHECK(again.code() == Code::kAlreadyExists);
  CHECK(again.error().message == "username is taken");

  // Racing registrations of one name: exactly one wins.
  req.set_username("dave");
  std::vector<Result<v1::Session>> results(4, MakeError(Code::kUnknown, ""));
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = service->Register(Call(), req); });
  for (auto& t : threads) t.join();
  int won = 0;
  for (auto& r : results) {
    if (r.ok())
      ++won;
    else
      CHECK(r.code() == Code::kAlreadyExists);
  }
  CHECK(won == 1);
}

TEST_CASE_METHOD(AuthFixture, "wrong password and unknown user look the same", "[auth][db]") {
  MustRegister("erin", "right password");
  auto wrong = Login("erin", "wrong password");
  auto unknown = Login("nobody", "wrong password");
  auto malformed = Login("NOT VALID", "wrong password");
  REQUIRE_FALSE(wrong.ok());
  REQUIRE_FALSE(unknown.ok());
  REQUIRE_FALSE(malformed.ok());
  CHECK(wrong.code() == Code::kUnauthenticated);
  CHECK(unknown.code() == wrong.code());
  CHECK(malformed.code() == wrong.code());
  CHECK(wrong.error().message == "invalid username or password");
  CHECK(unknown.error().message == wrong.error().message);
  CHECK(malformed.error().message == wrong.error().message);
  CHECK(Count("SELECT count(*) FROM sessions") == 1);  // only the registration's
}

TEST_CASE_METHOD(AuthFixture, "refresh rotates, and reuse of a rotated token revokes",
                 "[auth][db]") {
  v1::Session first = MustRegister("frank");
  const std::string sid = SessionOf(first);

  clock.now += 60;
  auto second = Refresh(first.refresh_token());
  REQUIRE(second.ok());
  CHECK(second->refresh_token() != first.refresh_token());
  CHECK(second->user_id() == first.user_id());
  CHECK(second->username() == "frank");
  CHECK(SessionOf(*second) == sid);  // same session, new secret
  CHECK(second->access_expires_at_unix() == clock.now + config.auth.access_token_ttl_s);

  // A secret that was never issued for this session is refused but ends nothing: knowing a
  // session id (it is in every access token) must not be enough to log someone out.
  auto forged = Refresh(sid + "." + NewRefreshSecret());
  CHECK(forged.code() == Code::kUnauthenticated);
  CHECK(Active(sid));
  CHECK(Refresh("garbage").code() == Code::kUnauthenticated);
  CHECK(Refresh(NewSessionId() + "." + NewRefreshSecret()).code() == Code::kUnauthenticated);

  auto third = Refresh(second->refresh_token());
  REQUIRE(third.ok());

  // The first token was rotated away: presenting it again is theft. The session ends.
  auto reused = Refresh(first.refresh_token());
  REQUIRE_FALSE(reused.ok());
  CHECK(reused.code() == Code::kUnauthenticated);
  CHECK_FALSE(Active(sid));
  auto after = Refresh(third->refresh_token());
  CHECK(after.code() == Code::kUnauthenticated);
  CHECK(after.error().message == "session revoked");
  CHECK(Count("SELECT count(*) FROM sessions WHERE revoke_reason = 'refresh token reuse'") == 1);
}

TEST_CASE_METHOD(AuthFixture, "concurrent refreshes of one token: one wins", "[auth][db]") {
  v1::Session s = MustRegister("grace");
  std::vector<Result<v1::Session>> results(3, MakeError(Code::kUnknown, ""));
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = Refresh(s.refresh_token()); });
  for (auto& t : threads) t.join();
  int won = 0;
  for (auto& r : results) {
    if (r.ok())
      ++won;
    else
      CHECK(r.code() == Code::kUnauthenticated);
  }
  CHECK(won == 1);
  CHECK_FALSE(Active(SessionOf(s)));  // the losers presented a rotated token: reuse
}

TEST_CASE_METHOD(AuthFixture, "logout ends the session", "[auth][db]") {
  v1::Session s = MustRegister("heidi");
  const std::string sid = SessionOf(s);
  REQUIRE(Active(sid));

  REQUIRE(Logout(s.refresh_token()).ok());
  CHECK_FALSE(Active(sid));
  auto refresh = Refresh(s.refresh_token());
  CHECK(refresh.code() == Code::kUnauthenticated);
  CHECK(Logout(s.refresh_token()).ok());  // idempotent

  CHECK(Logout("garbage").code() == Code::kUnauthenticated);
  CHECK(Logout(NewSessionId() + "." + NewRefreshSecret()).code() == Code::kUnauthenticated);
  v1::Session other = MustRegister("ivan");
  CHECK(Logout(SessionOf(other) + "." + NewRefreshSecret()).code() == Code::kUnauthenticated);
  CHECK(Active(SessionOf(other)));
}

TEST_CASE_METHOD(AuthFixture, "ActiveSessions answers for many sessions at once", "[auth][db]") {
  v1::Session a = MustRegister("judy");
  v1::Session b = MustRegister("karl");
  const std::string sa = SessionOf(a), sb = SessionOf(b);
  REQUIRE(Logout(b.refresh_token()).ok());
  auto active = service->ActiveSessions(Call(), {sa, sb, NewSessionId(), "not a session id"});
  REQUIRE(active.ok());
  CHECK(*active == std::vector<std::string>{sa});
  CHECK(service->ActiveSessions(Call(), {})->empty());
}

TEST_CASE_METHOD(AuthFixture, "VerificationKeys verify the tokens the service signs",
                 "[auth][db]") {
  v1::Session s = MustRegister("lena");
  auto keys = service->VerificationKeys();
  REQUIRE(keys.ok());
  REQUIRE_FALSE(keys->public_pems.empty());
  std::vector<VerificationKey> verification;
  for (const auto& [kid, pem] : keys->public_pems) verification.push_back({kid, pem});
  TokenVerifier verifier(verification, TokenOptions{keys->issuer, keys->audience, 0, 0},
                         SystemUnixClock());
  auto principal = verifier.Verify(s.access_token());
  REQUIRE(principal.ok());
  CHECK(principal->username == "lena");
}

TEST_CASE_METHOD(AuthFixture, "sessions expire; refresh extends them", "[auth][db]") {
  v1::Session s = MustRegister("judy");
  const std::string sid = SessionOf(s);
  const std::int64_t ttl = config.auth.refresh_token_ttl_s;

  clock.now += ttl - 10;
  auto refreshed = Refresh(s.refresh_token());
  REQUIRE(refreshed.ok());
  clock.now += ttl - 10;  // past the original expiry, within the extended one
  CHECK(Active(sid));
  clock.now += 10;
  CHECK_FALSE(Active(sid));
  auto late = Refresh(refreshed->refresh_token());
  CHECK(late.code() == Code::kUnauthenticated);
  CHECK(late.error().message == "session expired");

  CHECK_FALSE(Active("not-a-session-id"));
  CHECK_FALSE(Active(NewSessionId()));
  CHECK_FALSE(Active(""));
}

TEST_CASE_METHOD(AuthFixture, "rotated secrets are remembered for one refresh TTL", "[auth][db]") {
  v1::Session a = MustRegister("karl");
  const std::string sid = SessionOf(a);
  const std::int64_t ttl = config.auth.refresh_token_ttl_s;
  const std::int64_t t0 = clock.now;

  clock.now = t0 + 10;
  auto b = Refresh(a.refresh_token());  // a rotated at t0+10
  REQUIRE(b.ok());
  clock.now = t0 + ttl / 2;
  auto c = Refresh(b->refresh_token());  // b rotated at t0+ttl/2
  REQUIRE(c.ok());
  CHECK(Count("SELECT count(*) FROM session_rotated_refresh") == 2);
  clock.now = t0 + ttl + 20;
  auto d = Refresh(c->refresh_token());  // a is older than one TTL: forgotten
  REQUIRE(d.ok());
  CHECK(Count("SELECT count(*) FROM session_rotated_refresh") == 2);

  // a would have expired on its own: refused, but not treated as theft.
  auto stale = Refresh(a.refresh_token());
  CHECK(stale.code() == Code::kUnauthenticated);
  CHECK(stale.error().message == "invalid refresh token");
  CHECK(Active(sid));
  // b is still remembered: theft.
  CHECK(Refresh(b->refresh_token()).code() == Code::kUnauthenticated);
  CHECK_FALSE(Active(sid));
}

TEST_CASE_METHOD(AuthFixture, "login upgrades hashes made with weaker limits", "[auth][db]") {
  MustRegister("ken", "password one");
  DaemonConfig stronger = config;
  stronger.auth.argon2_ops_limit = 2;
  auto conn = Open(db.url());
  AuthService upgraded(&pool, stronger.auth, ResolveSigningKeys(stronger, *conn), clock.fn());
  v1::LoginRequest req;
  req.set_username("ken");
  req.set_password("password one");
  REQUIRE(upgraded.Login(Call(), req).ok());
  CHECK(Count("SELECT count(*) FROM users WHERE password_hash LIKE '%,t=2,%'") == 1);
  REQUIRE(upgraded.Login(Call(), req).ok());
  REQUIRE(Login("ken", "password one").ok());
}

TEST_CASE("auth migrations are idempotent", "[auth][db]") {
  infrachat::testing::TestDatabase db;
  auto conn = Open(db.url());
  pg::Migrate(*conn, "auth", AuthMigrations());
  pg::Migrate(*conn, "auth", AuthMigrations());
  pqxx::nontransaction tx(*conn);
  CHECK(tx.exec1("SELECT count(*) FROM schema_migrations WHERE module = 'auth'")[0].as<int>() ==
        static_cast<int>(AuthMigrations().size()));
  CHECK(tx.exec1("SELECT count(*) FROM information_schema.tables WHERE table_name IN"
                 " ('users', 'sessions', 'session_rotated_refresh', 'signing_keys')")[0]
            .as<int>() == 4);
}

TEST_CASE("concurrent key bootstrap yields one key", "[auth][db]") {
  infrachat::testing::TestDatabase db;
  pg::Migrate(*Open(db.url()), "auth", AuthMigrations());

  std::string kids[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] {
      auto conn = pg::Connect(db.url());
      if (conn.ok()) kids[i] = BootstrapSigningKeys(**conn).front().kid;
    });
  }
  for (auto& t : threads) t.join();
  CHECK_FALSE(kids[0].empty());
  CHECK(kids[0] == kids[1]);
  auto conn = Open(db.url());
  {
    pqxx::nontransaction tx(*conn);
    CHECK(tx.exec1("SELECT count(*) FROM signing_keys")[0].as<int>() == 1);
  }
  // Later starts reuse it.
  CHECK(ResolveSigningKeys(DevConfig(), *conn).signing.kid == kids[0]);
}

TEST_CASE("production mode needs key files", "[auth][db]") {
  infrachat::testing::TestDatabase db;
  auto conn = Open(db.url());
  pg::Migrate(*conn, "auth", AuthMigrations());
  DaemonConfig config = DevConfig();
  config.mode = "production";
  try {
    ResolveSigningKeys(config, *conn);
    FAIL("expected an exception");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("auth.private_key_file") != std::string::npos);
  }
  config.auth.private_key_file = "/nonexistent/jwt.key";
  config.auth.public_key_file = "/nonexistent/jwt.pub";
  try {
    ResolveSigningKeys(config, *conn);
    FAIL("expected an exception");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find("/nonexistent/jwt.key") != std::string::npos);
  }
  pqxx::nontransaction tx(*conn);
  CHECK(tx.exec1("SELECT count(*) FROM signing_keys")[0].as<int>() == 0);  // none generated
}

TEST_CASE("database down gives UNAVAILABLE, token checks keep working", "[auth][db]") {
  // Nothing listens on port 1.
  pg::ConnectionPool dead("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2", 2);
  auto key = GenerateSigningKey();
  REQUIRE(key.ok());
  KeySet keys{*key, {{key->kid, key->public_pem}}};
  FakeClock clock;
  AuthService service(&dead, DevConfig().auth, keys, clock.fn());

  v1::RegisterRequest reg;
  reg.set_username("larry");
  reg.set_password("password1");
  CHECK(service.Register(Call(), reg).code() == Code::kUnavailable);
  v1::LoginRequest login;
  login.set_username("larry");
  login.set_password("password1");
  CHECK(service.Login(Call(), login).code() == Code::kUnavailable);
  v1::RefreshRequest refresh;
  refresh.set_refresh_token(NewSessionId() + "." + NewRefreshSecret());
  CHECK(service.Refresh(Call(), refresh).code() == Code::kUnavailable);
  v1::LogoutRequest logout;
  logout.set_refresh_token(refresh.refresh_token());
  CHECK(service.Logout(Call(), logout).code() == Code::kUnavailable);
  CHECK(service.IsSessionActive(Call(), NewSessionId()).code() == Code::kUnavailable);

  TokenSigner signer(*key, TokenOptions{}, clock.fn());
  auto token = signer.Sign(5, "larry", "sid");
  REQUIRE(token.ok());
  CHECK(service.VerifyAccessToken(token->token).ok());
}

TEST_CASE("the auth module migrates, bootstraps a key and provides AuthApi", "[auth][db]") {
  infrachat::testing::TestDatabase db;
  DaemonConfig config = DevConfig();
  config.database.url = db.url();
  pg::ConnectionPool pool(db.url(), 2);
  ModuleContext ctx(config);
  ctx.ProvideDb(&pool);
  auto module = MakeAuthModule();
  CHECK(module->name() == "auth");
  module->Start(ctx);

  v1::RegisterRequest req;
  req.set_username("mallory");
  req.set_password("password1");
  auto session = ctx.auth().Register(Call(), req);
  REQUIRE(session.ok());
  CHECK(ctx.auth().VerifyAccessToken(session->access_token()).ok());
  module->Stop();
  CHECK_THROWS_AS(ctx.auth(), std::logic_error);

  // A second start (a restart, or a second process) keeps the same key: old tokens verify.
  auto again = MakeAuthModule();
  again->Start(ctx);
  CHECK(ctx.auth().VerifyAccessToken(session->access_token()).ok());
  again->Stop();

  ModuleContext prod_ctx([&] {
    DaemonConfig prod = config;
    prod.mode = "production";
    return prod;
  }());
  prod_ctx.ProvideDb(&pool);
  CHECK_THROWS_WITH(MakeAuthModule()->Start(prod_ctx),
                    Catch::Matchers::Contains("auth.private_key_file"));

  ModuleContext down_ctx([&] {
    DaemonConfig down = config;
    down.database.url = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2";
    return down;
  }());
  down_ctx.ProvideDb(&pool);
  CHECK_THROWS_WITH(MakeAuthModule()->Start(down_ctx),
                    Catch::Matchers::Contains("auth: cannot reach the database"));
}
