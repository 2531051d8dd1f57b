// Error-message assembly for the control-plane components (tagging,
// controller). Debian's Abseil is built with its own string_view
// (ABSL_OPTION_USE_STD_STRING_VIEW 0), so absl::StrCat does not take
// std::string_view; this small stand-in does. It lives here because every
// control-plane component depends on tagging.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dfw {

namespace str_cat_internal {
template <typename T>
void Append(std::string& out, const T& v) {
  if constexpr (std::is_same_v<T, char>) {
    out.push_back(v);
  } else if constexpr (std::is_same_v<T, bool>) {
    out.append(v ? "true" : "false");
  } else if constexpr (std::is_integral_v<T>) {
    out.append(std::to_string(v));
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out.append(std::string_view(v));
  } else {
    out.append(v.data(), v.size());  // absl::string_view and the like
  }
}
}  // namespace str_cat_internal

template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (str_cat_internal::Append(out, args), ...);
  return out;
}

inline std::string Join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out.append(sep);
    out.append(parts[i]);
  }
  return out;
}

}  // namespace dfw
