# Every dependency is a Debian 12 package (scripts/install-deps.sh installs them).
# Imported targets make their headers system includes, so DPDK's and gRPC's
# warnings do not trip our -Werror.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

pkg_check_modules(DPDK REQUIRED IMPORTED_TARGET libdpdk)
pkg_check_modules(LIBVIRT REQUIRED IMPORTED_TARGET libvirt)
pkg_check_modules(LIBXML2 REQUIRED IMPORTED_TARGET libxml-2.0)
pkg_check_modules(ROCKSDB REQUIRED IMPORTED_TARGET rocksdb)
# The guest agent (vmagent/): nftables (whole rulesets), libnftnl + libmnl
# (set-element batches, the nf_tables monitor), conntrack and NFLOG.
pkg_check_modules(NFTABLES REQUIRED IMPORTED_TARGET libnftables)
pkg_check_modules(NFTNL REQUIRED IMPORTED_TARGET libnftnl)
pkg_check_modules(MNL REQUIRED IMPORTED_TARGET libmnl)
pkg_check_modules(NFCT REQUIRED IMPORTED_TARGET libnetfilter_conntrack)
pkg_check_modules(NFLOG REQUIRED IMPORTED_TARGET libnetfilter_log)

find_package(Protobuf REQUIRED)
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

find_package(absl REQUIRED)
# OpenSSL 3 (libssl-dev): the CA and mutual TLS (trust/).
find_package(OpenSSL 3.0 REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(GTest REQUIRED)
include(GoogleTest)
find_package(benchmark REQUIRED)

# cpp-httplib is header-only (libcpp-httplib-dev ships the header and a shared
# library build); we use the header with OpenSSL off.
find_path(HTTPLIB_INCLUDE_DIR httplib.h REQUIRED)
add_library(dfw_httplib INTERFACE)
target_include_directories(dfw_httplib SYSTEM INTERFACE ${HTTPLIB_INCLUDE_DIR})
target_link_libraries(dfw_httplib INTERFACE Threads::Threads)
add_library(dfw::httplib ALIAS dfw_httplib)
# Debian's httplib.h is the split (declarations-only) header: the code is in
# libcpp-httplib.so, built with OpenSSL, zlib and brotli, whose defines the
# header needs too (they change class layouts). Take both from pkg-config.
pkg_check_modules(CPPHTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
target_link_libraries(dfw_httplib INTERFACE PkgConfig::CPPHTTPLIB)
