// ParseDomainXml: a libvirt domain's XML (virDomainGetXMLDesc) -> Domain, with
// the operator's tags and bound addresses from the metadata in kMetadataNs.
// Pure function, no shared state: safe from any thread.

#include <arpa/inet.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "dfw/hostagent/libvirt_inventory.h"

namespace dfw::hostagent {
namespace {

struct DocDeleter {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
struct CtxtDeleter {
  void operator()(xmlParserCtxt* ctxt) const { xmlFreeParserCtxt(ctxt); }
};

std::string_view Name(const xmlNode* node) { return reinterpret_cast<const char*>(node->name); }

// Elements named `name` in no namespace (a plain domain XML element, or a
// child that an operator wrote without a prefix inside our metadata element).
bool IsPlain(const xmlNode* node, std::string_view name) {
  return node->type == XML_ELEMENT_NODE && node->ns == nullptr && Name(node) == name;
}

bool InOurNs(const xmlNode* node) {
  return node->ns != nullptr && node->ns->href != nullptr &&
         std::string_view(reinterpret_cast<const char*>(node->ns->href)) == kMetadataNs;
}

// Inside our metadata element: `<dfw:name>` or an unprefixed `<name>`.
bool IsOurs(const xmlNode* node, std::string_view name) {
  return node->type == XML_ELEMENT_NODE && (node->ns == nullptr || InOurNs(node)) &&
         Name(node) == name;
}

std::optional<std::string> Attr(const xmlNode* node, const char* name) {
  xmlChar* value = xmlGetNoNsProp(node, reinterpret_cast<const xmlChar*>(name));
  if (value == nullptr) return std::nullopt;
  std::string out(reinterpret_cast<const char*>(value));
  xmlFree(value);
  return out;
}

std::string Text(const xmlNode* node) {
  xmlChar* value = xmlNodeGetContent(node);
  if (value == nullptr) return "";
  std::string out(absl::StripAsciiWhitespace(reinterpret_cast<const char*>(value)));
  xmlFree(value);
  return out;
}

const xmlNode* FirstPlainChild(const xmlNode* parent, std::string_view name) {
  for (const xmlNode* c = parent->children; c != nullptr; c = c->next) {
    if (IsPlain(c, name)) return c;
  }
  return nullptr;
}

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("domain XML: ", what));
}

// "52:54:00:AA:00:01" -> "52:54:00:aa:00:01"; nullopt if not six hex pairs.
std::optional<std::string> NormalizeMac(std::string_view mac) {
  if (mac.size() != 17) return std::nullopt;
  std::string out(mac);
  for (size_t i = 0; i < out.size(); ++i) {
    const bool sep = i % 3 == 2;
    if (sep ? out[i] != ':' : !std::isxdigit(static_cast<unsigned char>(out[i]))) {
      return std::nullopt;
    }
    out[i] = absl::ascii_tolower(out[i]);
  }
  return out;
}

// "2001:DB8:0::1" -> "2001:db8::1"; nullopt if neither IPv4 nor IPv6.
std::optional<std::string> CanonicalIp(const std::string& ip) {
  unsigned char buf[sizeof(struct in6_addr)];
  char text[INET6_ADDRSTRLEN];
  for (int family : {AF_INET, AF_INET6}) {
    if (inet_pton(family, ip.c_str(), buf) == 1 &&
        inet_ntop(family, buf, text, sizeof(text)) != nullptr) {
      return std::string(text);
    }
  }
  return std::nullopt;
}

// 32 hex digits, dashes anywhere (as libvirt accepts) -> 8-4-4-4-12 lower case.
std::optional<std::string> CanonicalUuid(std::string_view uuid) {
  std::string hex;
  for (char c : uuid) {
    if (c == '-') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    hex.push_back(absl::ascii_tolower(c));
  }
  if (hex.size() != 32) return std::nullopt;
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

struct MetadataInterface {
  std::string id;
  std::vector<std::string> addresses;
};

void AppendUnique(std::vector<std::string>& list, std::string value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(std::move(value));
}

// Our <dfw:firewall> element: tags, os, and per-MAC interface data.
absl::Status ParseMetadata(const xmlNode* root, Domain& domain,
                           std::map<std::string, MetadataInterface>& by_mac) {
  int tag_index = 0;
  int iface_index = 0;
  for (const xmlNode* c = root->children; c != nullptr; c = c->next) {
    if (IsOurs(c, "tag")) {
      ++tag_index;
      DomainTag tag{Attr(c, "scope").value_or(""), Attr(c, "value").value_or("")};
      if (tag.value.empty()) {
        return Invalid(absl::StrCat("metadata tag[", tag_index, "]: value is empty"));
      }
      domain.tags.push_back(std::move(tag));
    } else if (IsOurs(c, "os")) {
      domain.os = Text(c);
    } else if (IsOurs(c, "interface")) {
      ++iface_index;
      const std::string where = absl::StrCat("metadata interface[", iface_index, "]");
      std::optional<std::string> raw_mac = Attr(c, "mac");
      if (!raw_mac) return Invalid(absl::StrCat(where, ": mac is missing"));
      std::optional<std::string> mac = NormalizeMac(*raw_mac);
      if (!mac) return Invalid(absl::StrCat(where, ": mac '", *raw_mac, "' is not a MAC address"));
      MetadataInterface& entry = by_mac[*mac];
      if (std::optional<std::string> id = Attr(c, "id"); id && !id->empty()) entry.id = *id;
      for (const xmlNode* a = c->children; a != nullptr; a = a->next) {
        if (!IsOurs(a, "address")) continue;
        const std::string ip = Attr(a, "ip").value_or("");
        std::optional<std::string> canonical = CanonicalIp(ip);
        if (!canonical) {
          return Invalid(
              absl::StrCat(where, " (", *mac, "): address '", ip, "' is not an IP address"));
        }
        AppendUnique(entry.addresses, std::move(*canonical));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseDevices(const xmlNode* devices, Domain& domain) {
  int index = 0;
  for (const xmlNode* c = devices->children; c != nullptr; c = c->next) {
    if (!IsPlain(c, "interface")) continue;
    ++index;
    DomainInterface iface;
    iface.type = Attr(c, "type").value_or("");
    if (const xmlNode* mac = FirstPlainChild(c, "mac")) {
      const std::string raw = Attr(mac, "address").value_or("");
      std::optional<std::string> normalized = NormalizeMac(raw);
      if (!normalized) {
        return Invalid(
            absl::StrCat("devices interface[", index, "]: mac '", raw, "' is not a MAC address"));
      }
      iface.mac = *normalized;
    }
    if (const xmlNode* target = FirstPlainChild(c, "target")) {
      iface.target = Attr(target, "dev").value_or("");
    }
    if (const xmlNode* vport = FirstPlainChild(c, "virtualport")) {
      if (const xmlNode* params = FirstPlainChild(vport, "parameters")) {
        iface.interface_id = Attr(params, "interfaceid").value_or("");
      }
    }
    domain.interfaces.push_back(std::move(iface));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Domain> ParseDomainXml(std::string_view xml, std::string_view uri) {
  std::unique_ptr<xmlParserCtxt, CtxtDeleter> ctxt(xmlNewParserCtxt());
  if (!ctxt) return absl::ResourceExhaustedError("domain XML: cannot allocate a parser");
  std::unique_ptr<xmlDoc, DocDeleter> doc(
      xmlCtxtReadMemory(ctxt.get(), xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* err = xmlCtxtGetLastError(ctxt.get());
    std::string message = err != nullptr && err->message != nullptr
                              ? std::string(absl::StripAsciiWhitespace(err->message))
                              : "empty document";
    if (err != nullptr) absl::StrAppend(&message, " (line ", err->line, ")");
    return Invalid(absl::StrCat("not well-formed XML: ", message));
  }
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (root == nullptr || !IsPlain(root, "domain")) {
    return Invalid(absl::StrCat("root element is not <domain>"));
  }

  Domain domain;
  domain.uri = std::string(uri);
  const xmlNode* uuid = FirstPlainChild(root, "uuid");
  if (uuid == nullptr) return Invalid("no <uuid>");
  std::optional<std::string> canonical_uuid = CanonicalUuid(Text(uuid));
  if (!canonical_uuid) return Invalid(absl::StrCat("<uuid> '", Text(uuid), "' is not a UUID"));
  domain.uuid = *canonical_uuid;
  if (const xmlNode* name = FirstPlainChild(root, "name")) domain.name = Text(name);

  // libvirt keeps one metadata element per namespace; take the first of ours.
  std::map<std::string, MetadataInterface> metadata_by_mac;
  if (const xmlNode* metadata = FirstPlainChild(root, "metadata")) {
    for (const xmlNode* c = metadata->children; c != nullptr; c = c->next) {
      if (c->type == XML_ELEMENT_NODE && InOurNs(c)) {
        if (absl::Status s = ParseMetadata(c, domain, metadata_by_mac); !s.ok()) return s;
        break;
      }
    }
  }
  if (const xmlNode* devices = FirstPlainChild(root, "devices")) {
    if (absl::Status s = ParseDevices(devices, domain); !s.ok()) return s;
  }
  // Join the metadata's per-MAC data to the vNICs. Metadata for a MAC that the
  // domain has no interface for is ignored.
  for (DomainInterface& iface : domain.interfaces) {
    auto it = metadata_by_mac.find(iface.mac);
    if (it == metadata_by_mac.end()) continue;
    if (iface.interface_id.empty()) iface.interface_id = it->second.id;
    iface.addresses = it->second.addresses;
  }
  return domain;
}

}  // namespace dfw::hostagent
