// The policy the dataplane's DPDK-path tests enforce, in the controller's
// wire form (dfw.v1.HostDesiredState): web (local id 1) may reach db (local
// id 2) on TCP 5432; web's TCP 8443 is rejected; everything else is denied.
#pragma once

#include <google/protobuf/text_format.h>

#include "dfw/v1/dataplane.pb.h"

namespace dfw::dataplane::testing {

inline v1::DataplaneVNic WebVnic() {
  v1::DataplaneVNic v;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(id: "web-1-eth0" local_id: 1 mac: "52:54:00:00:00:11" bound_ips: "198.18.1.11")pb", &v);
  return v;
}
inline v1::DataplaneVNic DbVnic() {
  v1::DataplaneVNic v;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(id: "db-1-eth0" local_id: 2 mac: "52:54:00:00:00:21" bound_ips: "198.18.2.21")pb", &v);
  return v;
}

inline v1::HostDesiredState WebDbState(uint64_t revision) {
  v1::HostDesiredState s;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        address_sets { id: "g:web" prefixes: "198.18.1.11/32" }
        address_sets { id: "g:db" prefixes: "198.18.2.21/32" }
        rulesets {
          vnic_id: "web-1-eth0"
          rules {
            rule_num: 10
            policy_id: "app"
            rule_id: "web-to-db"
            sources { address_set_ids: "g:web" }
            destinations { address_set_ids: "g:db" }
            services {
              protocol: 6
              destination_ports { first: 5432 }
            }
            direction: DIRECTION_OUT
            action: ACTION_ALLOW
            stateful: true
          }
          rules {
            rule_num: 11
            policy_id: "app"
            rule_id: "no-8443"
            sources { any: true }
            destinations { any: true }
            services {
              protocol: 6
              destination_ports { first: 8443 }
            }
            direction: DIRECTION_OUT
            action: ACTION_REJECT
            stateful: true
          }
          default_rule { action: ACTION_DROP log: true }
        }
        rulesets {
          vnic_id: "db-1-eth0"
          rules {
            rule_num: 20
            policy_id: "app"
            rule_id: "db-from-web"
            sources { address_set_ids: "g:web" }
            destinations { address_set_ids: "g:db" }
            services {
              protocol: 6
              destination_ports { first: 5432 }
            }
            direction: DIRECTION_IN
            action: ACTION_ALLOW
            stateful: true
          }
          default_rule { action: ACTION_DROP log: true }
        }
      )pb",
      &s);
  s.set_revision(revision);
  return s;
}

}  // namespace dfw::dataplane::testing
