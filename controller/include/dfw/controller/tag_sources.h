// Tag sources: where a VM's tags come from, and which set the index
// matches on (the rule: docs/architecture.md, "Tags: API and libvirt
// metadata"). A VM's proto keeps host_tags (its host's last report of the
// domain's libvirt metadata), api_tags (set through the API) and tags, the
// effective set: the API's tags, plus the host's tags of every scope the
// API holds no tag of (plain tags, without a scope, always count). All three
// are kept sorted and unique. The API cannot remove a tag only the metadata
// carries (FAILED_PRECONDITION naming the field and where to change it).
//
// Pure functions over values; thread-safe.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/tagging/model.h"
#include "dfw/v1/model.pb.h"

namespace dfw::controller::tag_sources {

using TagList = std::vector<tagging::Tag>;
using ProtoTags = google::protobuf::RepeatedPtrField<dfw::v1::Tag>;

// A proto tag list as a sorted, unique TagList.
TagList TagsOf(const ProtoTags& in);
// api ∪ host, where the API's values of a scope replace the host's.
TagList EffectiveTags(const TagList& api, const TagList& host);
// Sets both sources and the effective tags of `vm`; returns the effective tags.
TagList SetTagSources(const TagList& api, const TagList& host, dfw::v1::Vm* vm);
// The API's tags after a whole-VM write (PutVm) asking for the effective set
// `want` over `old` (a GET -> PUT round trip changes nothing). Tags only the
// metadata carries stay the host's; a scope with any other requested value
// becomes the API's, with all its requested values. Leaving out a
// metadata-only tag the result would still carry is refused.
absl::StatusOr<TagList> ApiTagsForPut(const TagList& want, const dfw::v1::Vm& old);
// The API's tags of `vm` after a Tag request: removals (a tag, or a whole
// scope when the value is empty), then additions. A removal that the API's
// tags do not hold while the metadata keeps the tag (or, for a whole scope,
// a value of it) effective is refused.
absl::StatusOr<TagList> ApiTagsAfterTag(const dfw::v1::Vm& vm, const TagList& set,
                                        const TagList& unset);
// Older stores kept only `tags`, owned by the API.
void MigrateTagSources(dfw::v1::Vm* vm);

}  // namespace dfw::controller::tag_sources
