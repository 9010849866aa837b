#include "support/tls_certs.hpp"

#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <stdexcept>
#include <string>

namespace trading_shared::testing {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& arg) {
  std::string out = "'";
  for (const char c : arg) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

/// Runs `openssl args...` (stdin from /dev/null); throws with its output when it fails.
void openssl(std::initializer_list<std::string> args, const std::string& cwd = {}) {
  std::string command;
  if (!cwd.empty()) command = "cd " + quote(cwd) + " && ";
  command += "openssl";
  for (const auto& arg : args) command += " " + quote(arg);
  command += " </dev/null 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("tls_certs: popen failed for: " + command);
  std::string output;
  std::array<char, 4096> buffer{};
  while (const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) {
    output.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("tls_certs: `" + command + "` failed:\n" + output);
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("tls_certs: cannot write " + path);
}

std::string random_serial() {
  std::random_device device;
  std::mt19937_64 random(device());
  char text[32];
  std::snprintf(text, sizeof text, "0x%016llx",
                static_cast<unsigned long long>(random() >> 1));  // positive
  return text;
}

constexpr const char* kServerSans = "DNS:localhost,IP:127.0.0.1,IP:::1";

std::string extensions(const std::string& san, const char* usage) {
  std::string text = "[v3]\n";
  if (!san.empty()) text += "subjectAltName=" + san + "\n";
  text += "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n";
  text += std::string("extendedKeyUsage=") + usage + "\n";
  return text;
}

void make_key(const std::string& path) {
  openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path});
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

void make_ca(const std::string& cert, const std::string& key, const std::string& name) {
  make_key(key);
  openssl({"req", "-x509", "-new", "-key", key, "-subj", "/CN=" + name, "-days", "3650", "-out",
           cert, "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
           "keyUsage=critical,keyCertSign,cRLSign"});
}

/// A certificate for `key` (made) signed by the CA, valid for 825 days from now.
void issue(const std::string& ca_cert, const std::string& ca_key, const std::string& cert,
           const std::string& key, const std::string& common_name, const std::string& san,
           const char* usage) {
  make_key(key);
  const std::string csr = cert + ".csr";
  const std::string ext = cert + ".ext";
  openssl({"req", "-new", "-key", key, "-subj", "/CN=" + common_name, "-out", csr});
  write_file(ext, extensions(san, usage));
  openssl({"x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-set_serial",
           random_serial(), "-days", "825", "-sha256", "-extfile", ext, "-extensions", "v3", "-out",
           cert});
  fs::remove(csr);
  fs::remove(ext);
}

/// The expired certificate: `openssl x509 -req` of OpenSSL 3.0 cannot back-date (no
/// -not_before), so a throwaway `openssl ca` database signs it with explicit dates.
void issue_expired(const TestCertificates& c) {
  const std::string work = c.dir + "/expired-ca";
  fs::create_directories(work);
  write_file(work + "/index.txt", "");
  write_file(work + "/serial", "1000\n");
  write_file(work + "/ca.cnf",
             "[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = index.txt\n"
             "serial = serial\nnew_certs_dir = .\ncertificate = " +
                 c.ca_cert + "\nprivate_key = " + c.ca_key +
                 "\ndefault_md = sha256\npolicy = policy_any\nunique_subject = no\n"
                 "copy_extensions = none\n[policy_any]\ncommonName = supplied\n" +
                 extensions(kServerSans, "serverAuth"));
  make_key(c.expired_key);
  const std::string csr = work + "/expired.csr";
  openssl({"req", "-new", "-key", c.expired_key, "-subj", "/CN=localhost", "-out", csr});
  openssl({"ca", "-batch", "-config", "ca.cnf", "-startdate", "20200101000000Z", "-enddate",
           "20200201000000Z", "-in", csr, "-out", c.expired_cert, "-extensions", "v3", "-notext"},
          work);
  fs::remove_all(work);
}

bool exists(const std::string& path) {
  return fs::exists(path);
}

}  // namespace

TestCertificates make_test_certificates(const std::string& dir) {
  fs::create_directories(dir);
  TestCertificates c;
  c.dir = dir;
  c.ca_cert = dir + "/ca.crt";
  c.ca_key = dir + "/ca.key";
  c.server_cert = dir + "/server.crt";
  c.server_key = dir + "/server.key";
  c.client_cert = dir + "/client.crt";
  c.client_key = dir + "/client.key";
  c.other_ca_cert = dir + "/other-ca.crt";
  c.other_ca_key = dir + "/other-ca.key";
  c.other_server_cert = dir + "/other-server.crt";
  c.other_server_key = dir + "/other-server.key";
  c.wrong_host_cert = dir + "/wrong-host.crt";
  c.wrong_host_key = dir + "/wrong-host.key";
  c.expired_cert = dir + "/expired.crt";
  c.expired_key = dir + "/expired.key";
  // Each certificate is reused when present (its key with it); a new CA re-issues everything.
  const bool new_ca = !exists(c.ca_cert) || !exists(c.ca_key);
  if (new_ca) make_ca(c.ca_cert, c.ca_key, "ts-test-ca");
  if (new_ca || !exists(c.server_cert)) {
    issue(c.ca_cert, c.ca_key, c.server_cert, c.server_key, "localhost", kServerSans, "serverAuth");
  }
  if (new_ca || !exists(c.client_cert)) {
    issue(c.ca_cert, c.ca_key, c.client_cert, c.client_key, "ts-client", "", "clientAuth");
  }
  const bool new_other_ca = !exists(c.other_ca_cert) || !exists(c.other_ca_key);
  if (new_other_ca) make_ca(c.other_ca_cert, c.other_ca_key, "ts-test-other-ca");
  if (new_other_ca || !exists(c.other_server_cert)) {
    issue(c.other_ca_cert, c.other_ca_key, c.other_server_cert, c.other_server_key, "localhost",
          kServerSans, "serverAuth");
  }
  if (new_ca || !exists(c.wrong_host_cert)) {
    issue(c.ca_cert, c.ca_key, c.wrong_host_cert, c.wrong_host_key, "wrong.example",
          "DNS:wrong.example", "serverAuth");
  }
  if (new_ca || !exists(c.expired_cert)) issue_expired(c);
  return c;
}

void issue_server_certificate(const TestCertificates& certs, const std::string& cert_path,
                              const std::string& key_path, const std::string& common_name) {
  const std::string cert_tmp = cert_path + ".new";
  const std::string key_tmp = key_path + ".new";
  issue(certs.ca_cert, certs.ca_key, cert_tmp, key_tmp, common_name, kServerSans, "serverAuth");
  fs::rename(key_tmp, key_path);
  fs::rename(cert_tmp, cert_path);
}

}  // namespace trading_shared::testing
