#include "tls.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace infrachat {

namespace {

constexpr const char* kPlaintext = "plaintext (development default)";

// Config loading checked that the file is readable PEM; it may have gone since.
std::string ReadPem(const std::string& key, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(key + ": cannot read " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

grpc::SslServerCredentialsOptions::PemKeyCertPair KeyCertPair(const std::string& prefix,
                                                              const std::string& key_file,
                                                              const std::string& cert_file) {
  return {ReadPem(prefix + ".key_file", key_file), ReadPem(prefix + ".cert_file", cert_file)};
}

}  // namespace

ListenerSecurity PublicListenerSecurity(const TlsConfig& tls) {
  const PublicTlsConfig& files = tls.public_port;
  if (!files.enabled()) return {grpc::InsecureServerCredentials(), kPlaintext};
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back(KeyCertPair("tls.public", files.key_file, files.cert_file));
  return {grpc::SslServerCredentials(options), "TLS"};
}

ListenerSecurity InternalListenerSecurity(const TlsConfig& tls) {
  const InternalTlsConfig& files = tls.internal;
  if (!files.enabled()) return {grpc::InsecureServerCredentials(), kPlaintext};
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ReadPem("tls.internal.ca_file", files.ca_file);
  options.pem_key_cert_pairs.push_back(
      KeyCertPair("tls.internal", files.key_file, files.cert_file));
  return {grpc::SslServerCredentials(options), "mutual TLS"};
}

std::shared_ptr<grpc::ChannelCredentials> InternalChannelCredentials(const TlsConfig& tls) {
  const InternalTlsConfig& files = tls.internal;
  if (!files.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  // Only the cluster CA: a certificate from a public CA must not pass for a cluster process.
  options.pem_root_certs = ReadPem("tls.internal.ca_file", files.ca_file);
  options.pem_private_key = ReadPem("tls.internal.key_file", files.key_file);
  options.pem_cert_chain = ReadPem("tls.internal.cert_file", files.cert_file);
  return grpc::SslCredentials(options);
}

std::string DescribeInternalChannels(const TlsConfig& tls) {
  return tls.internal.enabled() ? "mutual TLS" : kPlaintext;
}

}  // namespace infrachat
