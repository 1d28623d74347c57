// The interactive client's terminal: a line editor (libedit's readline-compatible callback API)
// with output printed above the line being typed, without corrupting it.
//
// Everything runs on one thread: the owner polls stdin_fd() and calls OnStdinReadable(); output
// from other threads must be handed to that thread first (the interactive loop uses a pipe).
// Without a terminal on stdin/stdout it degrades to plain line reading and printing.
#pragma once

#include <termios.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace infrachat::cli {

class Terminal {
 public:
  // `line` is std::nullopt at end of input (Ctrl-D on an empty line, or EOF).
  using LineHandler = std::function<void(std::optional<std::string> line)>;

  Terminal(bool interactive, bool color);
  ~Terminal();
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  void Start(const std::string& prompt, LineHandler on_line);
  // Restores the terminal. Idempotent.
  void Stop();
  void SetPrompt(const std::string& prompt);
  // Reads what is available on stdin; calls the line handler for each completed line (after
  // libedit has returned, so the handler may print).
  void OnStdinReadable();
  // Milliseconds until OnIdle() has something to do (a paste to hand to the line editor), or -1.
  int IdleTimeoutMs() const;
  void OnIdle();

  // Prints one line above the input line. `tag` names it so that ReplaceLast can overwrite it
  // while nothing else was printed after it.
  void Print(const std::string& text, const std::string& tag = {});
  // Overwrites the last printed line if it carries `tag` and is still directly above the input
  // line (and the terminal was not resized since). Returns false (nothing printed) otherwise.
  bool ReplaceLast(const std::string& tag, const std::string& text);

  bool color() const { return color_; }
  bool interactive() const { return interactive_; }
  // SGR styling helpers; plain text when colors are off.
  std::string Dim(const std::string& s) const;
  std::string Bold(const std::string& s) const;
  std::string Color(const std::string& s, int sgr) const;

 private:
  static void OnLineThunk(char* line);
  // Bytes of a paste: complete lines go to the line handler directly, the rest waits in
  // paste_carry_ for more (see OnStdinReadable).
  void TakePaste(const std::string& data);
  void FlushPasteCarry();
  // Points rl_line_buffer at a buffer of ours that is large enough (see terminal.cc).
  void EnsureLineShadow(std::size_t bytes);
  void ResetLineEditor();
  void ClearInput();
  void Redraw();
  int Columns() const;

  bool interactive_;
  bool color_;
  bool started_ = false;
  std::string prompt_;
  LineHandler on_line_;
  std::string partial_;        // non-interactive: bytes of an incomplete line
  std::string last_tag_;       // tag of the last printed line, if it still is the last
  std::size_t last_rows_ = 0;  // rows it took, at a width of last_cols_
  int last_cols_ = 0;
  std::optional<std::string> submitted_;  // a line completed during rl_callback_read_char
  bool eof_ = false;
  std::optional<termios> saved_termios_;  // the terminal's settings before Start
  std::vector<char> line_shadow_;         // what rl_line_buffer points to
  std::size_t line_bytes_ = 0;            // bytes in libedit's line (an upper bound)
  std::string paste_carry_;               // the unfinished last line of a paste
  // libedit's line when known (empty after a reset, a paste's tail after FlushPasteCarry);
  // nullopt once the user has edited it.
  std::optional<std::string> editor_text_ = std::string();
  bool paste_cr_ = false;  // the paste's last byte was \r (a \n after it is not a line)
  std::chrono::steady_clock::time_point paste_at_{};
  std::size_t submitted_rows_ = 0;  // rows the echo of the submitted line occupies
};

}  // namespace infrachat::cli
