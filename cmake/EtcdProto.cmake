# etcd's v3 gRPC API (KV, Lease, Watch) for the controller's etcd store
# (controller/src/etcd_store.cc). The .proto files come from Debian 12's
# golang-etcd-server-dev (3.4.23, the version of etcd-server), fetched at
# configure time with `apt-get download` + `dpkg-deb -x` (not installed: it
# would pull 135 Go packages), or from DFW_ETCD_DEB, a copy of that .deb.
# gogoproto and google.api options are stripped: they only steer Go code
# generation and the HTTP gateway; the wire format is unchanged.
set(DFW_ETCD_DEB "" CACHE FILEPATH
    "golang-etcd-server-dev .deb holding etcd's .proto files (empty: apt-get download)")

set(etcd_dir ${CMAKE_BINARY_DIR}/etcd-proto)
file(MAKE_DIRECTORY ${etcd_dir})
set(etcd_deb "${DFW_ETCD_DEB}")
if(NOT etcd_deb)
  file(GLOB etcd_deb ${etcd_dir}/golang-etcd-server-dev_*.deb)
endif()
if(NOT etcd_deb)
  message(STATUS "etcd protos: apt-get download golang-etcd-server-dev")
  execute_process(COMMAND apt-get download golang-etcd-server-dev
    WORKING_DIRECTORY ${etcd_dir} RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  file(GLOB etcd_deb ${etcd_dir}/golang-etcd-server-dev_*.deb)
  if(NOT etcd_deb)
    message(FATAL_ERROR
      "etcd protos: `apt-get download golang-etcd-server-dev` failed (${rc}: ${err}). "
      "Run scripts/install-deps.sh (it updates apt's lists), or pass -DDFW_ETCD_DEB=FILE, "
      "or -DDFW_WITH_ETCD=OFF to build without the etcd store.")
  endif()
endif()
list(GET etcd_deb 0 etcd_deb)
set(etcd_x ${etcd_dir}/x)
if(NOT EXISTS ${etcd_x}/.done)
  execute_process(COMMAND dpkg-deb -x ${etcd_deb} ${etcd_x} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "etcd protos: dpkg-deb -x ${etcd_deb} failed (${rc})")
  endif()
  file(WRITE ${etcd_x}/.done "")
endif()

set(etcd_go ${etcd_x}/usr/share/gocode/src/go.etcd.io/etcd)
set(etcd_src ${etcd_dir}/src)
set(etcd_gen ${etcd_dir}/gen)
file(MAKE_DIRECTORY ${etcd_gen})
set(etcd_gen_srcs)
foreach(p mvcc/mvccpb/kv auth/authpb/auth etcdserver/etcdserverpb/rpc)
  if(NOT EXISTS ${etcd_go}/${p}.proto)
    message(FATAL_ERROR "etcd protos: ${etcd_go}/${p}.proto is not in ${etcd_deb}")
  endif()
  file(READ ${etcd_go}/${p}.proto text)
  string(REGEX REPLACE "import \"(gogoproto/gogo|google/api/annotations)\\.proto\";" "" text "${text}")
  string(REGEX REPLACE "option \\(gogoproto\\.[a-z_]+\\) = [a-z]+;" "" text "${text}")
  string(REGEX REPLACE "additional_bindings {[^}]*}" "" text "${text}")
  string(REGEX REPLACE "option \\(google\\.api\\.http\\) = {[^}]*};" "" text "${text}")
  string(REGEX REPLACE "\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
  file(WRITE ${etcd_src}/etcd/${p}.proto.new "${text}")
  file(COPY_FILE ${etcd_src}/etcd/${p}.proto.new ${etcd_src}/etcd/${p}.proto ONLY_IF_DIFFERENT)
  set(outs ${etcd_gen}/etcd/${p}.pb.cc ${etcd_gen}/etcd/${p}.pb.h)
  set(grpc_args)
  if(p STREQUAL "etcdserver/etcdserverpb/rpc")
    list(APPEND outs ${etcd_gen}/etcd/${p}.grpc.pb.cc ${etcd_gen}/etcd/${p}.grpc.pb.h)
    set(grpc_args --grpc_out=${etcd_gen} --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN})
  endif()
  add_custom_command(
    OUTPUT ${outs}
    COMMAND protobuf::protoc --proto_path=${etcd_src} --cpp_out=${etcd_gen} ${grpc_args}
      ${etcd_src}/etcd/${p}.proto
    DEPENDS ${etcd_src}/etcd/${p}.proto protobuf::protoc
    COMMENT "protoc etcd ${p}.proto")
  list(APPEND etcd_gen_srcs ${outs})
endforeach()

# Generated code is not ours: no -Werror, headers as system includes.
add_library(dfw_etcd_proto STATIC ${etcd_gen_srcs})
add_library(dfw::etcd_proto ALIAS dfw_etcd_proto)
target_include_directories(dfw_etcd_proto SYSTEM PUBLIC ${etcd_gen})
target_link_libraries(dfw_etcd_proto PUBLIC protobuf::libprotobuf PkgConfig::GRPCPP)
set_target_properties(dfw_etcd_proto PROPERTIES POSITION_INDEPENDENT_CODE ON)
