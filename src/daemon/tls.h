// Transport security of the daemon, built once at start from tls.* (docs/CONFIG.md, "TLS"): the
// credentials of the public and the internal listener, and of every channel this process opens
// to another process's internal listener. The PEM files are read when these are built, so
// rotating a certificate takes a restart.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "infrachat/config/config.h"

namespace infrachat {

// How one listener is secured, and how start-up says it: "plaintext (development default)",
// "TLS" or "mutual TLS".
struct ListenerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::string description;
};

// The public listener (grpc.listen_address): TLS with tls.public.*, else plaintext. Clients
// are not asked for a certificate: they authenticate with tokens.
ListenerSecurity PublicListenerSecurity(const TlsConfig& tls);

// The internal listener: with tls.internal.*, mutual TLS that requires a client certificate
// signed by tls.internal.ca_file (a connection without one fails its handshake); else
// plaintext.
ListenerSecurity InternalListenerSecurity(const TlsConfig& tls);

// Credentials of every internal channel (remote::MakeInternalChannel): with tls.internal.*,
// the server is verified against ca_file, and cert_file/key_file are this process's client
// identity; else plaintext. Shareable by any number of channels and threads.
std::shared_ptr<grpc::ChannelCredentials> InternalChannelCredentials(const TlsConfig& tls);

// "mutual TLS" or "plaintext (development default)", as the start-up log says of internal
// channels.
std::string DescribeInternalChannels(const TlsConfig& tls);

}  // namespace infrachat
