#include "terminal.h"

#include <editline/readline.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "infrachat/client/cli_support.h"

namespace infrachat::cli {

namespace {

Terminal* g_terminal = nullptr;  // libedit's callback API has no user-data pointer

// Display width of text that may contain SGR escape sequences.
std::size_t VisibleWidth(const std::string& text) {
  std::string plain;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      i += 2;
      while (i < text.size() && !(text[i] >= 0x40 && text[i] <= 0x7e)) ++i;
      continue;
    }
    plain.push_back(text[i]);
  }
  return client::DisplayWidth(plain);
}

void Out(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

}  // namespace

Terminal::Terminal(bool interactive, bool color)
    : interactive_(interactive), color_(color && interactive) {}

Terminal::~Terminal() { Stop(); }

void Terminal::Start(const std::string& prompt, LineHandler on_line) {
  prompt_ = prompt;
  on_line_ = std::move(on_line);
  started_ = true;
  if (!interactive_) return;
  g_terminal = this;
  rl_catch_signals = 0;  // SIGINT/SIGTERM are the interactive loop's
  rl_callback_handler_install(prompt_.c_str(), &Terminal::OnLineThunk);
  std::fflush(stdout);
}

void Terminal::Stop() {
  if (!started_) return;
  started_ = false;
  if (interactive_) {
    rl_callback_handler_remove();
    Out("\r\n");
    std::fflush(stdout);
    g_terminal = nullptr;
  }
}

void Terminal::SetPrompt(const std::string& prompt) {
  if (prompt == prompt_) return;
  if (!interactive_) {
    prompt_ = prompt;
    return;
  }
  ClearInput();
  prompt_ = prompt;
  rl_set_prompt(prompt_.c_str());
  Redraw();
}

void Terminal::OnLineThunk(char* line) {
  Terminal* self = g_terminal;
  if (self == nullptr) {
    std::free(line);
    return;
  }
  if (line == nullptr) {
    self->eof_ = true;
  } else {
    if (*line != '\0') add_history(line);
    self->submitted_rows_ = (VisibleWidth(self->prompt_) + client::DisplayWidth(line)) /
                                static_cast<std::size_t>(self->Columns()) +
                            1;
    self->submitted_ = std::string(line);
    std::free(line);
    // libedit (3.1-2022) keeps the old line in its buffer after the callback unless the
    // handler is installed again; this also draws a fresh prompt.
    rl_callback_handler_install(self->prompt_.c_str(), &Terminal::OnLineThunk);
  }
}

void Terminal::OnStdinReadable() {
  if (!interactive_) {
    char buf[4096];
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) {
      if (!partial_.empty()) on_line_(std::exchange(partial_, {}));
      on_line_(std::nullopt);
      return;
    }
    partial_.append(buf, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = partial_.find('\n')) != std::string::npos) {
      std::string line = partial_.substr(0, nl);
      partial_.erase(0, nl + 1);
      on_line_(std::move(line));
    }
    return;
  }
  rl_callback_read_char();
  if (eof_) {
    eof_ = false;
    on_line_(std::nullopt);
    return;
  }
  if (submitted_) {
    // Erase the echo of the submitted line: what it did is printed in its own format.
    Out(fmt::format("\x1b[{}A\r\x1b[J", submitted_rows_));
    last_tag_.clear();
    Redraw();
    std::string line = std::move(*submitted_);
    submitted_.reset();
    on_line_(std::move(line));
  }
}

int Terminal::Columns() const {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

void Terminal::ClearInput() {
  const std::size_t cols = static_cast<std::size_t>(Columns());
  std::size_t before_cursor = VisibleWidth(prompt_);
  if (rl_line_buffer != nullptr) {
    const std::size_t point = std::min<std::size_t>(static_cast<std::size_t>(std::max(rl_point, 0)),
                                                    std::strlen(rl_line_buffer));
    before_cursor += client::DisplayWidth(std::string_view(rl_line_buffer, point));
  }
  const std::size_t up = before_cursor / cols;
  if (up > 0) Out(fmt::format("\x1b[{}A", up));
  Out("\r\x1b[J");
}

void Terminal::Redraw() {
  std::fflush(stdout);
  rl_forced_update_display();
  std::fflush(stdout);
}

void Terminal::Print(const std::string& text, const std::string& tag) {
  if (!interactive_) {
    Out(text);
    Out("\n");
    std::fflush(stdout);
    return;
  }
  ClearInput();
  Out(text);
  Out("\r\n");
  last_tag_ = tag;
  last_cols_ = Columns();
  const std::size_t cols = static_cast<std::size_t>(last_cols_);
  last_rows_ = std::max<std::size_t>(1, (VisibleWidth(text) + cols - 1) / cols);
  Redraw();
}

bool Terminal::ReplaceLast(const std::string& tag, const std::string& text) {
  if (!interactive_ || tag.empty() || tag != last_tag_ || Columns() != last_cols_) return false;
  ClearInput();
  Out(fmt::format("\x1b[{}A\r\x1b[J", last_rows_));
  Out(text);
  Out("\r\n");
  last_tag_.clear();
  Redraw();
  return true;
}

std::string Terminal::Dim(const std::string& s) const { return Color(s, 2); }
std::string Terminal::Bold(const std::string& s) const { return Color(s, 1); }
std::string Terminal::Color(const std::string& s, int sgr) const {
  if (!color_) return s;
  return fmt::format("\x1b[{}m{}\x1b[0m", sgr, s);
}

}  // namespace infrachat::cli
