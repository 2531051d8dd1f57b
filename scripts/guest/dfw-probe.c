// dfw-probe: tiny UDP helpers for the test guest (busybox's nc has no -u).
//   dfw-probe udp-echo PORT                   serve: echo every datagram back
//   dfw-probe udp HOST PORT MSG [TIMEOUT_S]   send MSG, print the reply;
//                                              exit 0 on a reply, 1 on timeout
// Built statically by build-guest.sh; also usable on the host side.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int usage(void) {
  fprintf(stderr, "usage: dfw-probe udp-echo PORT | udp HOST PORT MSG [TIMEOUT_S]\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc >= 3 && strcmp(argv[1], "udp-echo") == 0) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (fd < 0 || bind(fd, (struct sockaddr*)&a, sizeof a) != 0) {
      perror("bind");
      return 1;
    }
    char buf[65536];
    for (;;) {
      struct sockaddr_in p;
      socklen_t pl = sizeof p;
      ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr*)&p, &pl);
      if (n >= 0) sendto(fd, buf, (size_t)n, 0, (struct sockaddr*)&p, pl);
    }
  }
  if (argc >= 5 && strcmp(argv[1], "udp") == 0) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (fd < 0 || inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) return usage();
    double t = argc >= 6 ? atof(argv[5]) : 2.0;
    struct timeval tv = {.tv_sec = (long)t, .tv_usec = (long)((t - (long)t) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
      perror("connect");
      return 1;
    }
    if (send(fd, argv[4], strlen(argv[4]), 0) < 0) {
      perror("send");
      return 1;
    }
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0) {
      fprintf(stderr, "dfw-probe: no reply\n");
      return 1;
    }
    fwrite(buf, 1, (size_t)n, stdout);
    if (n == 0 || buf[n - 1] != '\n') putchar('\n');
    return 0;
  }
  return usage();
}
