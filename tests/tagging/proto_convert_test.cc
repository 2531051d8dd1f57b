// The API edge: every malformed field is named in the error.
#include "dfw/tagging/proto_convert.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

namespace dfw::tagging {
namespace {

template <typename M>
M Parse(const char* text) {
  M m;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &m)) << text;
  return m;
}

std::string GroupError(const char* text) {
  auto g = GroupFromProto(Parse<dfw::v1::SecurityGroup>(text));
  return g.ok() ? "" : std::string(g.status().message());
}
std::string VmError(const char* text) {
  auto v = VmFromProto(Parse<dfw::v1::Vm>(text));
  return v.ok() ? "" : std::string(v.status().message());
}

TEST(ProtoConvert, ValidGroupConverts) {
  auto g = GroupFromProto(Parse<dfw::v1::SecurityGroup>(R"pb(
    id: "web"
    static_members { ip_prefixes: "198.18.0.0/24" group_ids: "base" vm_ids: "vm-9" }
    criteria {
      conditions { tag { scope: "app" value: "web" } }
      conditions { vm_name { op: STRING_OP_STARTS_WITH value: "Web" } }
    }
    criteria { conditions { tag { scope: "env" } } }
    criteria {
      conditions { guest_os { op: STRING_OP_CONTAINS value: "Ubuntu" } }
      conditions { member_of_group: "base" }
    }
  )pb"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->criteria.size(), 3u);
  EXPECT_EQ(g->criteria[0][1].match.value, "web") << "matches are stored lower-case";
  EXPECT_EQ(g->criteria[1][0].kind, Condition::Kind::kTagScope);
  EXPECT_EQ(g->References(), (std::vector<std::string>{"base"}));
  EXPECT_EQ(g->static_prefixes[0].ToString(), "198.18.0.0/24");
}

TEST(ProtoConvert, GroupErrorsNameTheField) {
  EXPECT_EQ(GroupError(R"pb(id: "")pb"), "id: must not be empty");
  EXPECT_NE(GroupError(R"pb(id: "a b")pb").find("id: 'a b' has character ' '"), std::string::npos);
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            criteria {})pb"),
            "criteria[0].conditions: a conjunction needs at least one condition");
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            criteria { conditions {} })pb"),
            "criteria[0].conditions[0]: empty condition: set one of tag, vm_name, guest_os, "
            "member_of_group");
  EXPECT_NE(GroupError(R"pb(id: "g"
                            criteria {
                              conditions { tag { scope: "app" value: "x" } }
                              conditions { tag { scope: "a=b" value: "x" } }
                            })pb")
                .find("criteria[0].conditions[1].tag.scope"),
            std::string::npos);
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            criteria { conditions { vm_name { value: "x" } } })pb"),
            "criteria[0].conditions[0].vm_name.op: must be EQUALS, STARTS_WITH, ENDS_WITH or "
            "CONTAINS");
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            criteria { conditions { guest_os { op: STRING_OP_CONTAINS } } })pb"),
            "criteria[0].conditions[0].guest_os.value: must not be empty");
  EXPECT_NE(GroupError(R"pb(id: "g"
                            static_members { ip_prefixes: "198.18.0.1/24" })pb")
                .find("static_members.ip_prefixes[0]: '198.18.0.1/24' has host bits set"),
            std::string::npos);
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            static_members { group_ids: "g" })pb"),
            "static_members.group_ids[0]: a group cannot include itself");
  EXPECT_EQ(GroupError(R"pb(id: "g"
                            criteria { conditions { member_of_group: "g" } })pb"),
            "criteria[0].conditions[0].member_of_group: a group cannot test membership of itself");
}

TEST(ProtoConvert, UnknownFieldsAreRejected) {
  dfw::v1::SecurityGroup g;
  g.set_id("g");
  std::string wire = g.SerializeAsString();
  wire += std::string("\xa8\x06\x01", 3);  // field 101, varint 1
  dfw::v1::SecurityGroup parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  auto r = GroupFromProto(parsed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "group: unknown field number 101");
}

TEST(ProtoConvert, VmConvertsAndErrorsNameTheField) {
  auto vm = VmFromProto(Parse<dfw::v1::Vm>(R"pb(
    id: "4f6c0a3e-1111-2222-3333-444455556666"
    name: "web-1"
    tags { scope: "app" value: "web" }
    tags { scope: "app" value: "web" }
    vnics {
      id: "vnic-1"
      mac: "52:54:00:AA:bb:01"
      addresses { ip: "198.18.0.11" }
      addresses { ip: "2001:db8::b" }
    }
  )pb"));
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(vm->tags.size(), 1u) << "duplicate tags collapse";
  EXPECT_EQ(vm->vnics[0].mac, "52:54:00:aa:bb:01");
  EXPECT_EQ(vm->vnics[0].addresses.size(), 2u);

  EXPECT_EQ(VmError(R"pb(id: "v"
                         vnics { id: "n" mac: "52:54:00" })pb"),
            "vnics[0].mac: '52:54:00' is not a MAC like 52:54:00:ab:cd:ef");
  EXPECT_EQ(VmError(R"pb(id: "v"
                         vnics {
                           id: "n"
                           addresses { ip: "198.18.0.300" }
                         })pb"),
            "vnics[0].addresses[0].ip: '198.18.0.300' is not an IPv4 address");
  EXPECT_EQ(VmError(R"pb(id: "v"
                         vnics { id: "n" }
                         vnics { id: "n" })pb"),
            "vnics[1].id: 'n' appears twice in this VM");
  EXPECT_EQ(VmError(R"pb(id: "v"
                         tags {})pb"),
            "tags[0]: a tag needs a scope or a value");
}

TEST(ProtoConvert, TagText) {
  auto t = ParseTagText("app=web");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scope, "app");
  EXPECT_EQ(t->value, "web");
  EXPECT_EQ(ParseTagText("env")->value, "");
  EXPECT_FALSE(ParseTagText("bad scope=x").ok());
}

}  // namespace
}  // namespace dfw::tagging
