#include "infrachat/core/validation.h"

#include <catch2/catch.hpp>
#include <string>

namespace infrachat {
namespace {

using namespace std::string_literals;

TEST_CASE("IsValidUtf8 accepts well-formed text", "[validation]") {
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("hello, world"));
  CHECK(IsValidUtf8("\xC3\xA9"));          // U+00E9, 2 bytes
  CHECK(IsValidUtf8("\xE2\x82\xAC"));      // U+20AC, 3 bytes
  CHECK(IsValidUtf8("\xF0\x9F\x98\x80"));  // U+1F600 emoji, 4 bytes
  CHECK(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
  CHECK(IsValidUtf8("\xED\x9F\xBF"));      // U+D7FF, just below the surrogates
  CHECK(IsValidUtf8("\xEE\x80\x80"));      // U+E000, just above them
  CHECK(IsValidUtf8("\xC2\x80"));          // U+0080, smallest 2-byte
  CHECK(IsValidUtf8("\xE0\xA0\x80"));      // U+0800, smallest 3-byte
  CHECK(IsValidUtf8("\xF0\x90\x80\x80"));  // U+10000, smallest 4-byte
  CHECK(IsValidUtf8("a\0b"s));             // NUL is valid UTF-8; bodies reject it separately
}

TEST_CASE("IsValidUtf8 rejects malformed text", "[validation]") {
  SECTION("overlong encodings") {
    CHECK_FALSE(IsValidUtf8("\xC0\xAF"));          // '/' in 2 bytes
    CHECK_FALSE(IsValidUtf8("\xC1\xBF"));          // U+007F in 2 bytes
    CHECK_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // '/' in 3 bytes
    CHECK_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // U+07FF in 3 bytes
    CHECK_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // '/' in 4 bytes
    CHECK_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // U+FFFF in 4 bytes
  }
  SECTION("UTF-16 surrogates") {
    CHECK_FALSE(IsValidUtf8("\xED\xA0\x80"));  // U+D800
    CHECK_FALSE(IsValidUtf8("\xED\xBF\xBF"));  // U+DFFF
  }
  SECTION("truncated sequences") {
    CHECK_FALSE(IsValidUtf8("\xC3"));
    CHECK_FALSE(IsValidUtf8("\xE2\x82"));
    CHECK_FALSE(IsValidUtf8("\xF0\x9F\x98"));
    CHECK_FALSE(IsValidUtf8("ok\xF0\x9F\x98"));
    CHECK_FALSE(IsValidUtf8("\xE2\x82x"));  // continuation replaced by ASCII
    // The rest of the character follows in memory but not in the view: no reading past the end.
    const std::string euro = "\xE2\x82\xAC";
    CHECK_FALSE(IsValidUtf8(std::string_view(euro).substr(0, 2)));
    const std::string emoji = "\xF0\x9F\x98\x80";
    CHECK_FALSE(IsValidUtf8(std::string_view(emoji).substr(0, 3)));
  }
  SECTION("beyond U+10FFFF") {
    CHECK_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
    CHECK_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));
    CHECK_FALSE(IsValidUtf8("\xF7\xBF\xBF\xBF"));
  }
  SECTION("bytes that never start a character") {
    CHECK_FALSE(IsValidUtf8("\x80"));  // lone continuation
    CHECK_FALSE(IsValidUtf8("a\xBF"));
    CHECK_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));  // old 5-byte form
    CHECK_FALSE(IsValidUtf8("\xFE"));
    CHECK_FALSE(IsValidUtf8("\xFF"));
  }
}

TEST_CASE("NormalizeChannelName", "[validation]") {
  const std::string max(64, 'a');
  SECTION("accepted names, with one leading '#' removed") {
    CHECK(NormalizeChannelName("general").value() == "general");
    CHECK(NormalizeChannelName("#general").value() == "general");
    CHECK(NormalizeChannelName("dev.ops_2-x").value() == "dev.ops_2-x");
    CHECK(NormalizeChannelName(max).value() == max);
    CHECK(NormalizeChannelName("#" + max).value() == max);  // the '#' does not count
  }
  SECTION("rejected names") {
    for (const std::string& name :
         {""s, "#"s, max + "a", "#" + max + "a", "General"s, "GENERAL"s, "gen eral"s, "##general"s,
          "gen#eral"s, "caf\xC3\xA9"s, "a/b"s, "a\0b"s}) {
      INFO(name);
      const Result<std::string> result = NormalizeChannelName(name);
      REQUIRE_FALSE(result.ok());
      CHECK(result.code() == Code::kInvalidArgument);
    }
  }
  SECTION("the error says what is wrong") {
    CHECK(NormalizeChannelName("").error().message == "channel name is empty");
    CHECK(NormalizeChannelName(max + "a").error().message ==
          "channel name is longer than 64 characters");
  }
}

TEST_CASE("ValidateUsername", "[validation]") {
  for (const std::string& name :
       {"bob"s, "alice_99"s, "1up"s, "a.b-c_d"s, "bob."s, std::string(32, 'x')}) {
    INFO(name);
    CHECK(ValidateUsername(name).ok());
  }
  for (const std::string& name :
       {""s, "ab"s, std::string(33, 'x'), "Bob"s, "_bob"s, ".bob"s, "-bob"s, "bo b"s, "bob!"s,
        "b\xC3\xB6"
        "b"s}) {
    INFO(name);
    const Result<void> result = ValidateUsername(name);
    CHECK_FALSE(result.ok());
    CHECK(result.code() == Code::kInvalidArgument);
  }
  CHECK(ValidateUsername("_bob").error().message == "username must start with a letter or a digit");
}

TEST_CASE("ValidateBody", "[validation]") {
  CHECK(ValidateBody("hi", 8).ok());
  CHECK(ValidateBody("12345678", 8).ok());                // exactly the limit
  CHECK(ValidateBody("\xF0\x9F\x98\x80", 4).ok());        // emoji, 4 bytes
  CHECK_FALSE(ValidateBody("\xF0\x9F\x98\x80", 3).ok());  // the limit counts bytes
  CHECK(ValidateBody("line one\nline two\t!", 64).ok());

  CHECK(ValidateBody("", 8).error().message == "message body is empty");
  CHECK(ValidateBody("123456789", 8).error().message == "message body is 9 bytes; the limit is 8");
  CHECK(ValidateBody("a\0b"s, 8).error().message == "message body contains a NUL character");
  CHECK(ValidateBody("\xC0\xAF", 8).error().message == "message body is not valid UTF-8");
  CHECK(ValidateBody("ok\xF0\x9F", 8).code() == Code::kInvalidArgument);
}

TEST_CASE("ValidateClientMsgId", "[validation]") {
  CHECK(ValidateClientMsgId("a").ok());
  CHECK(ValidateClientMsgId("550e8400-e29b-41d4-a716-446655440000").ok());
  CHECK(ValidateClientMsgId("!~{}[]").ok());  // 0x21 and 0x7e are the bounds
  CHECK(ValidateClientMsgId(std::string(64, 'x')).ok());
  for (const std::string& id :
       {""s, std::string(65, 'x'), "a b"s, "a\tb"s, "a\x7f"s, "\xC3\xA9"s, "a\0b"s}) {
    INFO(id);
    const Result<void> result = ValidateClientMsgId(id);
    CHECK_FALSE(result.ok());
    CHECK(result.code() == Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace infrachat
