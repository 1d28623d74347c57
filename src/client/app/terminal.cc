#include "terminal.h"

#include <editline/readline.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <termios.h>
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

// A read of at least this many bytes is a paste, not typing.
constexpr int kPasteBytes = 64;
// A paste's unfinished last line goes to the line editor after this long without more input.
constexpr auto kPasteQuiet = std::chrono::milliseconds(300);

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
  saved_termios_.emplace();
  if (::tcgetattr(STDIN_FILENO, &*saved_termios_) != 0) saved_termios_.reset();
  rl_initialize();
  // libedit switches the terminal to its "execute" mode (by default the canonical, echoing mode
  // it found) each time a line is complete, until the handler is installed again. Input that
  // arrives meanwhile, e.g. the rest of a long paste, would be line-edited by the kernel (lines
  // cut at 4095 bytes, echoed twice). Keep the execute mode non-canonical and silent; the
  // original settings are restored in Stop().
  rl_parse_and_bind("setty -x -icanon -echo");
  rl_callback_handler_install(prompt_.c_str(), &Terminal::OnLineThunk);
  EnsureLineShadow(0);
  std::fflush(stdout);
}

void Terminal::Stop() {
  if (!started_) return;
  started_ = false;
  if (interactive_) {
    rl_callback_handler_remove();
    if (saved_termios_) ::tcsetattr(STDIN_FILENO, TCSADRAIN, &*saved_termios_);
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
    // Nothing else here: libedit is still inside rl_callback_read_char, and re-installing the
    // handler from the callback frees buffers it goes on to write to (heap corruption on long
    // input). OnStdinReadable resets the handler once rl_callback_read_char has returned.
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
  // A paste (many bytes at once) bypasses the line editor: libedit's callback API re-encodes the
  // whole line for every character (quadratic: a 10k-character line took 10 s of CPU), and its
  // line is what the user edits, not what they paste. Only when its line is empty, so that no
  // half-typed text is lost.
  int available = 0;
  if (editor_text_.has_value() && ::ioctl(STDIN_FILENO, FIONREAD, &available) == 0 &&
      (available >= kPasteBytes || !paste_carry_.empty())) {
    std::string data(static_cast<std::size_t>(std::max(available, 1)), '\0');
    const ssize_t n = ::read(STDIN_FILENO, data.data(), data.size());
    if (n > 0) {
      data.resize(static_cast<std::size_t>(n));
      TakePaste(data);
      return;
    }
  }
  FlushPasteCarry();
  EnsureLineShadow(line_bytes_ + 64);
  rl_callback_read_char();
  line_bytes_ = static_cast<std::size_t>(std::max(rl_end, 0));
  editor_text_.reset();  // edited by the user: only its length is known
  if (line_bytes_ == 0) editor_text_.emplace();
  if (submitted_) {
    // libedit (3.1-2022) keeps the old line in its buffer after the line callback unless the
    // handler is installed again; this also draws a fresh prompt. Done here, outside the
    // callback (see OnLineThunk).
    ResetLineEditor();
  }
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

// libedit's rl_line_buffer points into a conversion buffer that libedit reallocates when a
// longer line comes, yet rl_callback_read_char writes rl_line_buffer[rl_end] = '\0' after every
// character: on a long line, a write into freed memory ("malloc(): invalid next size"). Pointed at
// a zeroed buffer of ours that is always longer than the line, that write is harmless. Nothing
// here reads rl_line_buffer (its content is not the line).
void Terminal::EnsureLineShadow(std::size_t bytes) {
  if (line_shadow_.size() < bytes + 64 || rl_line_buffer != line_shadow_.data()) {
    line_shadow_.assign(std::max<std::size_t>({bytes * 2 + 64, line_shadow_.size(), 4096}), '\0');
    rl_line_buffer = line_shadow_.data();
  }
}

void Terminal::ResetLineEditor() {
  // Re-installing clears libedit's line and draws a fresh prompt; never from inside the line
  // callback.
  rl_callback_handler_remove();
  rl_callback_handler_install(prompt_.c_str(), &Terminal::OnLineThunk);
  EnsureLineShadow(0);
  line_bytes_ = 0;
  editor_text_.emplace();
}

void Terminal::TakePaste(const std::string& data) {
  paste_at_ = std::chrono::steady_clock::now();
  ClearInput();  // what is shown: the prompt, or the prompt and the paste so far
  std::string carry = std::exchange(paste_carry_, {});
  if (editor_text_ && !editor_text_->empty()) {
    // The rest of a paste whose start went to the line editor (OnIdle): take it back.
    carry = *editor_text_ + carry;
    ResetLineEditor();
    ClearInput();  // the prompt that drew
  }
  std::vector<std::string> lines;
  for (const char c : data) {
    if (c == '\n' && paste_cr_) {
      paste_cr_ = false;
      continue;
    }
    paste_cr_ = c == '\r';
    if (c == '\r' || c == '\n') {
      lines.push_back(std::exchange(carry, {}));
    } else {
      carry.push_back(c);
    }
  }
  rl_forced_update_display();  // the (empty) line editor, for the prints of the handler
  for (auto& line : lines) {
    if (!line.empty()) add_history(line.c_str());
    last_tag_.clear();
    on_line_(std::move(line));
  }
  ClearInput();
  // Shown while more may come; taken by the line editor once the paste has ended (OnIdle).
  paste_carry_ = std::move(carry);
  Redraw();
}

int Terminal::IdleTimeoutMs() const {
  if (paste_carry_.empty()) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      paste_at_ + kPasteQuiet - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::int64_t>(0, left.count()) + 1);
}

void Terminal::OnIdle() {
  if (!paste_carry_.empty() && std::chrono::steady_clock::now() >= paste_at_ + kPasteQuiet) {
    FlushPasteCarry();
  }
}

void Terminal::FlushPasteCarry() {
  if (paste_carry_.empty()) return;
  const std::string text = std::exchange(paste_carry_, {});
  // Erase what TakePaste showed (the prompt and the text, possibly wrapped).
  const std::size_t cols = static_cast<std::size_t>(Columns());
  const std::size_t up = (VisibleWidth(prompt_) + client::DisplayWidth(text)) / cols;
  if (up > 0) Out(fmt::format("\x1b[{}A", up));
  Out("\r\x1b[J");
  ResetLineEditor();
  EnsureLineShadow(text.size() + 64);
  rl_insert_text(text.c_str());
  line_bytes_ = text.size();
  editor_text_ = text;
  EnsureLineShadow(line_bytes_ + 64);
  Redraw();
}

int Terminal::Columns() const {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

void Terminal::ClearInput() {
  const std::size_t cols = static_cast<std::size_t>(Columns());
  std::size_t before_cursor = VisibleWidth(prompt_);
  if (!paste_carry_.empty()) {
    before_cursor += client::DisplayWidth(client::SanitizeForTerminal(paste_carry_));
  } else {
    // rl_point counts bytes: exact for ASCII, an overestimate for other UTF-8 text.
    before_cursor += static_cast<std::size_t>(std::max(rl_point, 0));
  }
  const std::size_t up = before_cursor / cols;
  if (up > 0) Out(fmt::format("\x1b[{}A", up));
  Out("\r\x1b[J");
}

void Terminal::Redraw() {
  std::fflush(stdout);
  if (!paste_carry_.empty()) {
    Out(prompt_ + client::SanitizeForTerminal(paste_carry_));
  } else {
    rl_forced_update_display();
  }
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
