// Every input the fuzzer ever found (tests/dataplane/fuzz_corpus/) replayed
// through the parser in the normal build.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

TEST(PacketParserFuzzRegressions, CorpusReplays) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(DFW_FUZZ_CORPUS)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    EXPECT_EQ(LLVMFuzzerTestOneInput(bytes.data(), bytes.size()), 0) << e.path();
    ++n;
  }
  EXPECT_GT(n, 0u) << "the corpus in " << DFW_FUZZ_CORPUS << " is empty";
}
