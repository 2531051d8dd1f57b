#include "dfw/controller/rest_api.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "google/protobuf/util/json_util.h"
#include "str_util.h"

namespace dfw::controller {

using google::protobuf::Message;
using httplib::Request;
using httplib::Response;

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

namespace {

std::string ToJson(const Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void SendError(Response& res, const absl::Status& s) {
  std::string msg(s.message());
  std::string field;
  size_t colon = msg.find(": ");
  if (colon != std::string::npos && msg.substr(0, colon).find(' ') == std::string::npos) {
    field = msg.substr(0, colon);
  }
  nlohmann::json j;
  j["error"] = {{"code", absl::StatusCodeToString(s.code())},
                {"http_status", HttpStatusFor(s.code())},
                {"field", field},
                {"message", msg}};
  res.status = HttpStatusFor(s.code());
  res.set_content(j.dump(), "application/json");
}

void SendMessage(Response& res, const Message& m, int status = 200, uint64_t etag = 0) {
  res.status = status;
  if (etag != 0) res.set_header("ETag", Cat("\"", etag, "\""));
  res.set_content(ToJson(m), "application/json");
}

template <typename T>
void Send(Response& res, const absl::StatusOr<T>& r, int status = 200) {
  if (!r.ok()) {
    SendError(res, r.status());
    return;
  }
  uint64_t etag = 0;
  if constexpr (requires(const T& t) { t.revision(); }) etag = r->revision();
  SendMessage(res, *r, status, etag);
}

absl::Status ParseBody(const Request& req, Message* m) {
  if (req.body.empty()) return absl::InvalidArgumentError("body: empty; send a JSON object");
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = false;
  auto s = google::protobuf::util::JsonStringToMessage(req.body, m, o);
  if (!s.ok()) return absl::InvalidArgumentError(Cat("body: ", std::string(s.message())));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ParseUint(const std::string& text, const char* field) {
  if (text.empty()) return absl::InvalidArgumentError(Cat(field, ": empty"));
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return absl::InvalidArgumentError(Cat(field, ": '", text, "' is not a number"));
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// If-Match: "5" (or W/"5"), or ?expected_revision=5.
absl::StatusOr<uint64_t> ExpectedRevision(const Request& req) {
  if (req.has_param("expected_revision")) {
    return ParseUint(req.get_param_value("expected_revision"), "expected_revision");
  }
  if (req.has_header("If-Match")) {
    std::string v = req.get_header_value("If-Match");
    if (v.rfind("W/", 0) == 0) v = v.substr(2);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return ParseUint(v, "If-Match");
  }
  return 0;
}

absl::StatusOr<dfw::v1::ListRequest> ListParams(const Request& req) {
  dfw::v1::ListRequest l;
  if (req.has_param("page_size")) {
    auto n = ParseUint(req.get_param_value("page_size"), "page_size");
    if (!n.ok()) return n.status();
    l.set_page_size(static_cast<uint32_t>(std::min<uint64_t>(*n, UINT32_MAX)));
  }
  if (req.has_param("page_token")) l.set_page_token(req.get_param_value("page_token"));
  return l;
}

// The id in the path wins; a body id that disagrees is an error.
absl::Status PathId(std::string* body_id, const std::string& path_id) {
  if (body_id->empty()) {
    *body_id = path_id;
  } else if (*body_id != path_id) {
    return absl::InvalidArgumentError(
        Cat("id: '", *body_id, "' does not match the path's '", path_id, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

RestApi::RestApi(ModelService* model) : model_(model), server_(std::make_unique<httplib::Server>()) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(8); };
  Routes();
}

RestApi::~RestApi() { Stop(); }

absl::StatusOr<int> RestApi::Start(const std::string& host, int port) {
  int bound = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return absl::UnavailableError(Cat("http: cannot listen on ", host, ":", port));
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void RestApi::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void RestApi::Routes() {
  auto& s = *server_;
  ModelService* m = model_;
  const std::string id = "/([^/]+)";

  // ---- VMs
  s.Get("/api/v1/vms", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListVms(*l));
  });
  s.Post("/api/v1/vms", [m](const Request& req, Response& res) {
    dfw::v1::PutVmRequest r;
    if (auto e = ParseBody(req, r.mutable_vm()); !e.ok()) return SendError(res, e);
    Send(res, m->PutVm(r, true), 201);
  });
  s.Get("/api/v1/vms" + id, [m](const Request& req, Response& res) {
    Send(res, m->GetVm(req.matches[1]));
  });
  s.Put("/api/v1/vms" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutVmRequest r;
    if (auto e = ParseBody(req, r.mutable_vm()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_vm()->mutable_id(), req.matches[1]); !e.ok()) return SendError(res, e);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->PutVm(r));
  });
  s.Delete("/api/v1/vms" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->DeleteVm(r));
  });
  s.Post("/api/v1/vms" + id + "/tags", [m](const Request& req, Response& res) {
    dfw::v1::TagRequest r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    if (r.vm_ids_size() > 0) {
      return SendError(res, absl::InvalidArgumentError("vm_ids: the VM is the one in the path"));
    }
    r.add_vm_ids(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    if (*ex != 0) r.set_expected_revision(*ex);
    Send(res, m->Tag(r));
  });
  s.Post("/api/v1/tags", [m](const Request& req, Response& res) {
    dfw::v1::TagRequest r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    Send(res, m->Tag(r));
  });
  s.Get("/api/v1/vms" + id + "/groups", [m](const Request& req, Response& res) {
    Send(res, m->VmGroups(req.matches[1]));
  });
  s.Get("/api/v1/vms" + id + "/effective-rules", [m](const Request& req, Response& res) {
    dfw::v1::EffectiveRulesRequest r;
    r.set_vm_id(req.matches[1]);
    Send(res, m->EffectiveRules(r));
  });
  s.Get("/api/v1/vnics" + id + "/effective-rules", [m](const Request& req, Response& res) {
    dfw::v1::EffectiveRulesRequest r;
    r.set_vnic_id(req.matches[1]);
    Send(res, m->EffectiveRules(r));
  });

  // ---- groups
  s.Get("/api/v1/groups", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListGroups(*l));
  });
  s.Post("/api/v1/groups", [m](const Request& req, Response& res) {
    dfw::v1::PutGroupRequest r;
    if (auto e = ParseBody(req, r.mutable_group()); !e.ok()) return SendError(res, e);
    Send(res, m->PutGroup(r, true), 201);
  });
  s.Get("/api/v1/groups" + id, [m](const Request& req, Response& res) {
    Send(res, m->GetGroup(req.matches[1]));
  });
  s.Put("/api/v1/groups" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutGroupRequest r;
    if (auto e = ParseBody(req, r.mutable_group()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_group()->mutable_id(), req.matches[1]); !e.ok()) {
      return SendError(res, e);
    }
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->PutGroup(r));
  });
  s.Delete("/api/v1/groups" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->DeleteGroup(r));
  });
  s.Get("/api/v1/groups" + id + "/members", [m](const Request& req, Response& res) {
    Send(res, m->GroupMembers(req.matches[1]));
  });

  // ---- policies
  s.Get("/api/v1/policies", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListPolicies(*l));
  });
  s.Post("/api/v1/policies", [m](const Request& req, Response& res) {
    dfw::v1::PutPolicyRequest r;
    if (auto e = ParseBody(req, r.mutable_policy()); !e.ok()) return SendError(res, e);
    Send(res, m->PutPolicy(r, true), 201);
  });
  s.Get("/api/v1/policies" + id, [m](const Request& req, Response& res) {
    Send(res, m->GetPolicy(req.matches[1]));
  });
  s.Put("/api/v1/policies" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutPolicyRequest r;
    if (auto e = ParseBody(req, r.mutable_policy()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_policy()->mutable_id(), req.matches[1]); !e.ok()) {
      return SendError(res, e);
    }
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->PutPolicy(r));
  });
  s.Delete("/api/v1/policies" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->DeletePolicy(r));
  });

  // ---- hosts, realization, changes, status
  s.Get("/api/v1/hosts", [m](const Request&, Response& res) { Send(res, m->ListHosts()); });
  s.Get("/api/v1/realization", [m](const Request& req, Response& res) {
    dfw::v1::RealizationRequest r;
    if (req.has_param("policy_id")) r.set_policy_id(req.get_param_value("policy_id"));
    Send(res, m->Realization(r));
  });
  s.Get("/api/v1/changes", [m](const Request& req, Response& res) {
    uint64_t from = 0, wait_ms = 0;
    if (req.has_param("from_revision")) {
      auto v = ParseUint(req.get_param_value("from_revision"), "from_revision");
      if (!v.ok()) return SendError(res, v.status());
      from = *v;
    }
    if (req.has_param("wait_ms")) {
      auto v = ParseUint(req.get_param_value("wait_ms"), "wait_ms");
      if (!v.ok()) return SendError(res, v.status());
      wait_ms = std::min<uint64_t>(*v, 60000);
    }
    if (wait_ms > 0)
      m->WaitForRevisionAbove(from, std::chrono::milliseconds(wait_ms));
    auto ev = m->Changes(from, 1000);
    if (!ev.ok()) return SendError(res, ev.status());
    std::string body = Cat("{\"revision\":\"", m->revision(), "\",\"events\":[");
    for (size_t i = 0; i < ev->size(); ++i) {
      if (i) body += ",";
      body += ToJson((*ev)[i]);
    }
    body += "]}";
    res.set_content(body, "application/json");
  });
  s.Get("/api/v1/status", [m](const Request&, Response& res) {
    ModelStats st = m->Stats();
    nlohmann::json j = {{"revision", st.revision},
                        {"vms", st.vms},
                        {"groups", st.groups},
                        {"policies", st.policies},
                        {"hosts", st.hosts},
                        {"connected_hosts", st.connected_hosts},
                        {"memberships", st.index.memberships},
                        {"compiled_rule_refs", st.compiler.compiled_rule_refs}};
    res.set_content(j.dump(), "application/json");
  });
  s.set_error_handler([](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      SendError(res, absl::NotFoundError(Cat("path: no such resource ", req.method, " ", req.path)));
    }
  });
}

}  // namespace dfw::controller
