// The real dfw-controller binary as a child process on 127.0.0.1 port 0,
// data in DIR/db, its output appended to DIR/controller.log.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace dfw::controller::testing {

class ControllerProcess {
 public:
  explicit ControllerProcess(const std::string& dir, std::vector<std::string> extra_args = {})
      : dir_(dir), extra_args_(std::move(extra_args)) {}
  ~ControllerProcess() { Kill(SIGKILL); }

  // Starts it and waits for its ports (a test failure if it does not come up).
  void Start() { ASSERT_TRUE(Launch()) << "dfw-controller did not start:\n" << Log(); }
  // Starts it; true once it listens, false when it exited first (exit_code()).
  bool Launch() {
    std::string port_file = dir_ + "/ports";
    std::remove(port_file.c_str());
    exit_code_ = -1;
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = dir_ + "/controller.log";
      FILE* f = std::fopen(log.c_str(), "a");
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
      std::string data = dir_ + "/db";
      std::vector<const char*> argv = {
          DFW_CONTROLLER_BIN, "--data-dir",  data.c_str(),  "--grpc-listen",   "127.0.0.1:0",
          "--http-listen",    "127.0.0.1:0", "--port-file", port_file.c_str(), "--insecure"};
      for (const auto& a : extra_args_) argv.push_back(a.c_str());
      argv.push_back(nullptr);
      execv(DFW_CONTROLLER_BIN, const_cast<char* const*>(argv.data()));
      _exit(127);
    }
    if (pid_ <= 0) return false;
    for (int i = 0; i < 1500; ++i) {
      std::ifstream f(port_file);
      std::string line;
      if (std::getline(f, line) && line.find("http=") != std::string::npos) {
        http_port_ = std::stoi(line.substr(line.rfind(':') + 1));
        size_t g = line.find("grpc=");
        size_t colon = line.find(':', g);
        if (g != std::string::npos && colon != std::string::npos) {
          grpc_port_ = std::stoi(line.substr(colon + 1));
        }
        return true;
      }
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int st = 0;
    waitpid(pid_, &st, 0);
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    pid_ = -1;
  }
  // Everything the processes started here wrote.
  std::string Log() const {
    std::ifstream f(dir_ + "/controller.log");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string data_dir() const { return dir_ + "/db"; }
  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  int exit_code() const { return exit_code_; }
  // Still running (reaps it, recording exit_code(), once it has exited).
  bool running() {
    if (pid_ <= 0) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) != pid_) return true;
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    pid_ = -1;
    return false;
  }

 private:
  std::string dir_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  int http_port_ = 0;
  int grpc_port_ = 0;
  int exit_code_ = -1;
};

}  // namespace dfw::controller::testing
