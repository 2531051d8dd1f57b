#include "dfw/trust/server_tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "dfw/trust/svid.h"
#include "str_cat.h"

namespace dfw::trust {

using internal::Cat;

struct ServerTls::KeyPair {
  X509* cert = nullptr;
  STACK_OF(X509) * chain = nullptr;
  EVP_PKEY* key = nullptr;
  ~KeyPair() {
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

std::string FileStamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "-";
  return Cat(st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ":", st.st_size, ":", st.st_ino);
}

}  // namespace

ServerTls::ServerTls(std::string svid_dir, std::chrono::seconds refresh)
    : dir_(std::move(svid_dir)), refresh_(refresh) {}
ServerTls::~ServerTls() = default;

absl::Status ServerTls::Load() {
  std::lock_guard<std::mutex> l(mu_);
  next_check_ = {};
  return ReloadIfChanged();
}

absl::Status ServerTls::ReloadIfChanged() {
  auto now = std::chrono::steady_clock::now();
  if (current_ && now < next_check_) return absl::OkStatus();
  next_check_ = now + refresh_;
  std::string stamp =
      FileStamp(dir_ + "/" + kSvidFile) + "|" + FileStamp(dir_ + "/" + kSvidKeyFile);
  if (current_ && stamp == stamp_) return absl::OkStatus();
  auto svid = ReadSvid(dir_);
  if (!svid.ok()) return svid.status();
  auto kp = std::make_shared<KeyPair>();
  {
    BIO* b = BIO_new_mem_buf(svid->cert_pem.data(), static_cast<int>(svid->cert_pem.size()));
    kp->cert = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    kp->chain = sk_X509_new_null();
    while (X509* extra = PEM_read_bio_X509(b, nullptr, nullptr, nullptr))
      sk_X509_push(kp->chain, extra);
    ERR_clear_error();
    BIO_free(b);
  }
  {
    BIO* b = BIO_new_mem_buf(svid->key_pem.data(), static_cast<int>(svid->key_pem.size()));
    kp->key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
  }
  if (!kp->cert || !kp->key) {
    return absl::InvalidArgumentError(
        Cat("tls: ", dir_, ": cannot read the SVID's certificate or key"));
  }
  if (X509_check_private_key(kp->cert, kp->key) != 1) {
    // A renewal caught half written: keep serving the previous pair.
    ERR_clear_error();
    next_check_ = now;  // look again at the next handshake
    if (current_) return absl::OkStatus();
    return absl::InvalidArgumentError(
        Cat("tls: ", dir_, ": the key does not match the certificate"));
  }
  current_ = std::move(kp);
  stamp_ = stamp;
  if (bundle_pem_.empty()) bundle_pem_ = svid->bundle_pem;
  return absl::OkStatus();
}

int ServerTls::CertCallback(SSL* ssl, void* arg) {
  auto* self = static_cast<ServerTls*>(arg);
  std::shared_ptr<KeyPair> kp;
  {
    std::lock_guard<std::mutex> l(self->mu_);
    (void)self->ReloadIfChanged();  // on failure the previous pair stays
    kp = self->current_;
  }
  if (!kp) return 0;
  if (SSL_use_certificate(ssl, kp->cert) != 1 || SSL_use_PrivateKey(ssl, kp->key) != 1) return 0;
  for (int i = 0; i < sk_X509_num(kp->chain); ++i) {
    SSL_add1_chain_cert(ssl, sk_X509_value(kp->chain, i));
  }
  return 1;
}

bool ServerTls::Setup(SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION |
                                SSL_OP_NO_RENEGOTIATION);
  // Trust: the bundle only (no system CAs). Ask for a client certificate,
  // verify any that comes; none is allowed here and refused above Enroll.
  X509_STORE* store = X509_STORE_new();
  BIO* b = BIO_new_mem_buf(bundle_pem_.data(), static_cast<int>(bundle_pem_.size()));
  int n = 0;
  while (X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, ca);
    X509_free(ca);
    ++n;
  }
  ERR_clear_error();
  BIO_free(b);
  if (n == 0) {
    X509_STORE_free(store);
    return false;
  }
  SSL_CTX_set_cert_store(&ctx, store);
  SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_cb(&ctx, &ServerTls::CertCallback, this);
  return true;
}

std::string PeerLeafPem(const SSL* ssl) {
  if (!ssl) return {};
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return {};
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, cert);
  char* data = nullptr;
  long len = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(b);
  return out;
}

}  // namespace dfw::trust
