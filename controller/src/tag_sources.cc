#include "dfw/controller/tag_sources.h"

#include <algorithm>

#include "str_util.h"

namespace dfw::controller::tag_sources {

namespace {

void SortUnique(TagList* tags) {
  std::sort(tags->begin(), tags->end());
  tags->erase(std::unique(tags->begin(), tags->end()), tags->end());
}

void TagsToProto(const TagList& tags, ProtoTags* out) {
  out->Clear();
  for (const auto& t : tags) {
    auto* pt = out->Add();
    pt->set_scope(t.scope);
    pt->set_value(t.value);
  }
}

bool Contains(const TagList& tags, const tagging::Tag& t) {
  return std::binary_search(tags.begin(), tags.end(), t);
}

// Scopes the API holds a tag of (plain tags claim nothing).
std::set<std::string> ClaimedScopes(const TagList& api) {
  std::set<std::string> out;
  for (const auto& t : api) {
    if (!t.scope.empty()) out.insert(t.scope);
  }
  return out;
}

std::string TagText(const tagging::Tag& t) {
  return t.scope.empty() ? t.value : Cat(t.scope, "=", t.value);
}

absl::Status FromMetadata(const std::string& field, const tagging::Tag& t, const dfw::v1::Vm& vm) {
  return absl::FailedPreconditionError(
      Cat(field, ": tag '", TagText(t), "' of VM '", vm.id(),
          "' comes from the domain's libvirt metadata and the API cannot remove it; change it in "
          "the domain's libvirt metadata on ",
          vm.host().empty() ? "the host that reported it" : Cat("host '", vm.host(), "'")));
}

}  // namespace

TagList TagsOf(const ProtoTags& in) {
  TagList out;
  for (const auto& t : in) out.push_back({t.scope(), t.value()});
  SortUnique(&out);
  return out;
}

TagList EffectiveTags(const TagList& api, const TagList& host) {
  auto claimed = ClaimedScopes(api);
  TagList out = api;
  for (const auto& t : host) {
    if (t.scope.empty() || !claimed.count(t.scope)) out.push_back(t);
  }
  SortUnique(&out);
  return out;
}

TagList SetTagSources(const TagList& api, const TagList& host, dfw::v1::Vm* vm) {
  TagList eff = EffectiveTags(api, host);
  TagsToProto(api, vm->mutable_api_tags());
  TagsToProto(host, vm->mutable_host_tags());
  TagsToProto(eff, vm->mutable_tags());
  return eff;
}

absl::StatusOr<TagList> ApiTagsForPut(const TagList& want, const dfw::v1::Vm& old) {
  TagList api_old = TagsOf(old.api_tags());
  TagList host = TagsOf(old.host_tags());
  TagList host_only;
  for (const auto& t : EffectiveTags(api_old, host)) {
    if (!Contains(api_old, t)) host_only.push_back(t);
  }
  TagList api;
  for (const auto& t : want) {
    if (!Contains(host_only, t)) api.push_back(t);
  }
  auto claimed = ClaimedScopes(api);
  for (const auto& t : want) {
    if (claimed.count(t.scope)) api.push_back(t);
  }
  SortUnique(&api);
  for (const auto& t : host_only) {
    if (!Contains(want, t) && (t.scope.empty() || !claimed.count(t.scope))) {
      return FromMetadata("vm.tags", t, old);
    }
  }
  return api;
}

absl::StatusOr<TagList> ApiTagsAfterTag(const dfw::v1::Vm& vm, const TagList& set,
                                        const TagList& unset) {
  TagList api = TagsOf(vm.api_tags());
  TagList host = TagsOf(vm.host_tags());
  auto matches = [](const tagging::Tag& u, const tagging::Tag& t) {
    return t.scope == u.scope && (u.value.empty() || t.value == u.value);
  };
  // Whether each removal names a tag the API holds, before any is applied:
  // "app" and "app=a" in one request both remove the API's app=a.
  std::vector<bool> removed_any(unset.size());
  for (size_t i = 0; i < unset.size(); ++i) {
    removed_any[i] =
        std::any_of(api.begin(), api.end(), [&](const auto& t) { return matches(unset[i], t); });
  }
  for (const auto& u : unset) std::erase_if(api, [&](const auto& t) { return matches(u, t); });
  api.insert(api.end(), set.begin(), set.end());
  SortUnique(&api);
  TagList eff = EffectiveTags(api, host);
  for (size_t i = 0; i < unset.size(); ++i) {
    if (removed_any[i]) continue;
    const auto& u = unset[i];
    for (const auto& t : host) {
      if (matches(u, t) && Contains(eff, t)) {
        return FromMetadata(Cat("remove[", i, "]"), t, vm);
      }
    }
  }
  return api;
}

void MigrateTagSources(dfw::v1::Vm* vm) {
  if (vm->host_tags_size() == 0 && vm->api_tags_size() == 0) *vm->mutable_api_tags() = vm->tags();
}

}  // namespace dfw::controller::tag_sources
