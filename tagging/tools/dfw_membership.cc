// dfw-membership: the membership engine from a shell.
//
// Loads a dfw.v1.Snapshot (text format: VMs with tags and vNICs, security
// groups), prints every group's effective members, then runs the commands
// given on the command line in order, printing the exact delta of each:
//
//   dfw-membership SNAPSHOT.textproto [COMMAND ...]
//     tag VM scope=value        set a tag
//     untag VM scope[=value]    remove a tag (all values of the scope without =)
//     rename VM NAME            rename a VM
//     group 'TEXTPROTO'         add or replace a group (dfw.v1.SecurityGroup)
//     remove-group GROUP        delete a group
//     remove-vm VM              delete a VM
//     members GROUP             print a group's members
//     explain VM                which groups a VM is in, and why
//
// A rejected command prints its error (naming the field) and changes nothing;
// the exit code is 1 if any command was rejected, 2 on bad usage.
#include <google/protobuf/text_format.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dfw/tagging/membership_index.h"
#include "dfw/tagging/proto_convert.h"

using namespace dfw::tagging;

namespace {

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "-" : out;
}
std::string Join(const std::vector<IpPrefix>& v) {
  std::vector<std::string> s;
  for (const auto& p : v)
    s.push_back(p.is_host() ? p.ToString().substr(0, p.ToString().find('/')) : p.ToString());
  return Join(s);
}

void PrintVms(const MembershipIndex& index) {
  printf("%-10s %-12s %-22s %-30s %s\n", "VM", "NAME", "GUEST OS", "TAGS", "vNICs");
  for (const auto& id : index.VmIds()) {
    const VmSpec* vm = index.FindVm(id);
    std::vector<std::string> tags, nics;
    for (const auto& t : vm->tags) tags.push_back(t.scope + "=" + t.value);
    for (const auto& n : vm->vnics) nics.push_back(n.id + " " + Join(n.addresses));
    printf("%-10s %-12s %-22s %-30s %s\n", id.c_str(), vm->name.c_str(), vm->guest_os.c_str(),
           Join(tags).c_str(), Join(nics).c_str());
  }
}

void PrintGroups(const MembershipIndex& index) {
  printf("%-10s %-24s %-28s %s\n", "GROUP", "VMs", "vNICs", "ADDRESSES");
  for (const auto& id : index.GroupIds()) {
    auto m = index.Members(id);
    printf("%-10s %-24s %-28s %s\n", id.c_str(), Join(m->vm_ids).c_str(), Join(m->vnic_ids).c_str(),
           Join(m->addresses).c_str());
  }
}

void PrintDelta(const MembershipDelta& d) {
  if (d.empty()) {
    printf("  no membership change\n");
    return;
  }
  for (const auto& g : d.groups) {
    printf("  group %s%s%s\n", g.group_id.c_str(), g.group_created ? " (created)" : "",
           g.group_deleted ? " (deleted)" : "");
    auto line = [](const char* what, const auto& add, const auto& del) {
      if (!add.empty()) printf("    + %-9s %s\n", what, Join(add).c_str());
      if (!del.empty()) printf("    - %-9s %s\n", what, Join(del).c_str());
    };
    line("VMs", g.vms_added, g.vms_removed);
    line("vNICs", g.vnics_added, g.vnics_removed);
    line("addresses", g.addresses_added, g.addresses_removed);
  }
}

int Usage() {
  fprintf(stderr,
          "usage: dfw-membership SNAPSHOT.textproto [COMMAND ...]\n"
          "  tag VM scope=value | untag VM scope[=value] | rename VM NAME | group 'TEXTPROTO'\n"
          "  remove-group GROUP | remove-vm VM | members GROUP | explain VM\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::ifstream in(argv[1]);
  if (!in) {
    fprintf(stderr, "%s: cannot open\n", argv[1]);
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  dfw::v1::Snapshot snap;
  if (!google::protobuf::TextFormat::ParseFromString(text.str(), &snap)) {
    fprintf(stderr, "%s: not a dfw.v1.Snapshot in text format (see the parser's message above)\n",
            argv[1]);
    return 2;
  }
  std::vector<VmSpec> vms;
  std::vector<GroupSpec> groups;
  for (int i = 0; i < snap.vms_size(); ++i) {
    auto vm = VmFromProto(snap.vms(i));
    if (!vm.ok()) {
      fprintf(stderr, "%s: vms[%d].%s\n", argv[1], i, std::string(vm.status().message()).c_str());
      return 2;
    }
    vms.push_back(std::move(*vm));
  }
  for (int i = 0; i < snap.groups_size(); ++i) {
    auto g = GroupFromProto(snap.groups(i));
    if (!g.ok()) {
      fprintf(stderr, "%s: groups[%d].%s\n", argv[1], i, std::string(g.status().message()).c_str());
      return 2;
    }
    groups.push_back(std::move(*g));
  }
  MembershipIndex index;
  if (auto st = index.Load(std::move(vms), std::move(groups)); !st.ok()) {
    fprintf(stderr, "%s: %s\n", argv[1], std::string(st.message()).c_str());
    return 2;
  }
  printf("== inventory (%s)\n", argv[1]);
  PrintVms(index);
  printf("\n== security groups: effective members\n");
  PrintGroups(index);

  int rc = 0;
  for (int i = 2; i < argc; ++i) {
    std::string cmd = argv[i];
    auto arg = [&](int k) -> const char* { return i + k < argc ? argv[i + k] : nullptr; };
    absl::StatusOr<MembershipDelta> d = absl::InvalidArgumentError("unknown command");
    bool mutation = true;
    if ((cmd == "tag" || cmd == "untag") && arg(1) && arg(2)) {
      printf("\n$ %s %s %s\n", cmd.c_str(), arg(1), arg(2));
      auto t = ParseTagText(arg(2));
      if (!t.ok()) {
        d = t.status();
      } else if (cmd == "tag") {
        d = index.ChangeTags(arg(1), {*t}, {});
      } else {
        d = index.ChangeTags(arg(1), {}, {*t});
      }
      i += 2;
    } else if (cmd == "rename" && arg(1) && arg(2)) {
      printf("\n$ rename %s %s\n", arg(1), arg(2));
      if (const VmSpec* cur = index.FindVm(arg(1))) {
        VmSpec next = *cur;
        next.name = arg(2);
        d = index.UpsertVm(std::move(next));
      } else {
        d = absl::NotFoundError(std::string("VM '") + arg(1) + "' does not exist");
      }
      i += 2;
    } else if (cmd == "group" && arg(1)) {
      printf("\n$ group '%s'\n", arg(1));
      dfw::v1::SecurityGroup pg;
      if (!google::protobuf::TextFormat::ParseFromString(arg(1), &pg)) {
        d = absl::InvalidArgumentError("not a dfw.v1.SecurityGroup in text format");
      } else if (auto g = GroupFromProto(pg); !g.ok()) {
        d = g.status();
      } else {
        d = index.UpsertGroup(std::move(*g));
      }
      i += 1;
    } else if (cmd == "remove-group" && arg(1)) {
      printf("\n$ remove-group %s\n", arg(1));
      d = index.RemoveGroup(arg(1));
      i += 1;
    } else if (cmd == "remove-vm" && arg(1)) {
      printf("\n$ remove-vm %s\n", arg(1));
      d = index.RemoveVm(arg(1));
      i += 1;
    } else if (cmd == "members" && arg(1)) {
      mutation = false;
      printf("\n$ members %s\n", arg(1));
      auto m = index.Members(arg(1));
      if (!m.ok()) {
        printf("  error: %s\n", std::string(m.status().message()).c_str());
        rc = 1;
      } else {
        printf("  VMs: %s\n  vNICs: %s\n  addresses: %s\n", Join(m->vm_ids).c_str(),
               Join(m->vnic_ids).c_str(), Join(m->addresses).c_str());
      }
      i += 1;
    } else if (cmd == "explain" && arg(1)) {
      mutation = false;
      printf("\n$ explain %s\n", arg(1));
      auto r = index.GroupsOf(arg(1));
      if (!r.ok()) {
        printf("  error: %s\n", std::string(r.status().message()).c_str());
        rc = 1;
      } else {
        for (const auto& m : *r) {
          if (m.via == MembershipReason::Via::kStaticVm) {
            printf("  %-10s static member\n", m.group_id.c_str());
          } else if (m.via == MembershipReason::Via::kIncludedGroup) {
            printf("  %-10s through included group %s\n", m.group_id.c_str(),
                   m.through_group.c_str());
          } else {
            printf("  %-10s criteria[%u] matched\n", m.group_id.c_str(), m.conjunction);
          }
        }
      }
      i += 1;
    } else {
      return Usage();
    }
    if (!mutation) continue;
    if (!d.ok()) {
      printf("  rejected, nothing changed: %s\n", std::string(d.status().message()).c_str());
      rc = 1;
    } else {
      PrintDelta(*d);
    }
  }
  if (argc > 2) {
    printf("\n== security groups after the changes\n");
    PrintGroups(index);
  }
  return rc;
}
