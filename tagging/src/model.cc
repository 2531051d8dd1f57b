#include "dfw/tagging/model.h"

#include <algorithm>

namespace dfw::tagging {

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool StringMatch::Matches(std::string_view subject) const {
  switch (op) {
    case StringOp::kEquals:
      return subject == value;
    case StringOp::kStartsWith:
      return subject.starts_with(value);
    case StringOp::kEndsWith:
      return subject.ends_with(value);
    case StringOp::kContains:
      return subject.find(value) != std::string_view::npos;
  }
  return false;
}

std::vector<std::string> GroupSpec::References() const {
  std::vector<std::string> refs = included_groups;
  for (const auto& conj : criteria) {
    for (const auto& c : conj) {
      if (c.kind == Condition::Kind::kMemberOf) refs.push_back(c.group);
    }
  }
  std::sort(refs.begin(), refs.end());
  refs.erase(std::unique(refs.begin(), refs.end()), refs.end());
  return refs;
}

}  // namespace dfw::tagging
