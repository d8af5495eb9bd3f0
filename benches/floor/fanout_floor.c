// The floor of fanout delivery latency on this machine: a server that does
// nothing but what a fanout must (read a message, write it to every
// connection), against a client that does nothing but send and read. A
// chat server doing the same fanout on these cores has this much of the
// kernel's work to do and more of its own, so its median comes out at or
// above this one's, give or take what runs of one program differ by.
//
// The "server" thread (core 0) reads 80-byte messages from SENDERS sender
// connections and writes them to each of N connections in turn, one
// writev per connection carrying every message that connection has not
// had yet (so it gathers while it is behind, and writes each message at
// once when it is not); every 64 connections it looks for new messages,
// without waiting. The "client" thread (core 1) sends RATE messages a
// second in total (round-robin over the senders, evenly spaced; the send
// time in each message), reads the N connections with epoll, and records
// each delivery's latency: the time it read it minus the time in it.
// loadgen's fanout measures the same thing with more work per read.
//
//   gcc -O2 -pthread -o /tmp/fanout_floor benches/floor/fanout_floor.c
//   /tmp/fanout_floor 1000 50 6      # N MESSAGES_PER_S SECONDS [SENDERS]
//
// Deliveries a second are N x MESSAGES_PER_S (1000 x 50 = the side-by-side
// script's fanout50k). Prints one JSON line: the delivery latency's
// percentiles in ms, the deliveries made and expected, and the server
// thread's CPU per delivery.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FRAME 80
#define MAX_GATHER 64

static int N, RATE, SECONDS, SENDERS;
static int *client_fd, *server_fd;      // the N receiving connections, both ends
static int *send_fd, *accepted_send_fd; // the sender connections, both ends
static volatile int stop_server;
static double server_cpu_us;

static void pin(int core) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(core, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static double thread_cpu_us(void) {
  struct rusage r;
  getrusage(RUSAGE_THREAD, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec +
         r.ru_stime.tv_usec;
}

// Messages the server has read, in order; each connection has had those
// before its `next`.
static char (*messages)[FRAME];
static long message_count, message_cap;
static long *next;
// What each sender connection has read of a message not yet whole.
static char (*partial)[FRAME];
static int *partial_len;
// The same on the client's side, for each of the N connections.
static char (*held)[FRAME];
static int *held_len;

// An epoll set of the N descriptors in `fds`, made non-blocking, each
// reported with its index.
static int watch_all(const int *fds, int n) {
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    fcntl(fds[i], F_SETFL, O_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  return ep;
}

// Adds one byte read to the message `frame` holds `*len` bytes of; true
// once it is whole (and `*len` is back to 0 for the next one). Messages
// are written whole and read in order, so a read that ends inside one
// leaves the rest for the next read.
static int frame_byte(char *frame, int *len, char byte) {
  frame[(*len)++] = byte;
  if (*len < FRAME) return 0;
  *len = 0;
  return 1;
}

// Reads whatever the senders sent, waiting up to `timeout_ms` for some.
static void take_messages(int ep, int timeout_ms) {
  struct epoll_event ev[64];
  int n = epoll_wait(ep, ev, 64, timeout_ms);
  for (int e = 0; e < n; e++) {
    int s = ev[e].data.u32;
    char buf[FRAME * 64];
    ssize_t r;
    while ((r = read(accepted_send_fd[s], buf, sizeof buf)) > 0) {
      for (ssize_t i = 0; i < r; i++) {
        if (!frame_byte(partial[s], &partial_len[s], buf[i])) continue;
        if (message_count == message_cap) {
          fprintf(stderr, "more messages than planned\n");
          exit(1);
        }
        memcpy(messages[message_count++], partial[s], FRAME);
      }
    }
  }
}

static void *server(void *arg) {
  (void)arg;
  pin(0);
  int ep = watch_all(accepted_send_fd, SENDERS);
  double cpu0 = thread_cpu_us();
  struct iovec iov[MAX_GATHER];
  while (!stop_server) {
    take_messages(ep, 100);
    // Sweep until every connection has had every message.
    int behind = 1;
    while (behind) {
      behind = 0;
      for (int i = 0; i < N; i++) {
        if (i % 64 == 63) take_messages(ep, 0);
        long from = next[i], to = message_count;
        if (from == to) continue;
        if (to - from > MAX_GATHER) to = from + MAX_GATHER, behind = 1;
        for (long m = from; m < to; m++) {
          iov[m - from].iov_base = messages[m];
          iov[m - from].iov_len = FRAME;
        }
        if (writev(server_fd[i], iov, (int)(to - from)) != (to - from) * FRAME) {
          perror("a short or failed write (raise the socket buffers)");
          exit(1);
        }
        next[i] = to;
      }
      for (int i = 0; i < N && !behind; i++) behind = next[i] < message_count;
    }
  }
  server_cpu_us = thread_cpu_us() - cpu0;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s N MESSAGES_PER_S SECONDS [SENDERS]\n", argv[0]);
    return 2;
  }
  N = atoi(argv[1]);
  RATE = atoi(argv[2]);
  SECONDS = atoi(argv[3]);
  SENDERS = argc > 4 ? atoi(argv[4]) : 10;
  if (N < 1 || RATE < 1 || SECONDS < 1 || SENDERS < 1) {
    fprintf(stderr, "N, MESSAGES_PER_S, SECONDS and SENDERS must be at least 1\n");
    return 2;
  }
  long planned = (long)RATE * SECONDS;
  message_cap = planned + 1;
  messages = calloc(message_cap, FRAME);
  next = calloc(N, sizeof *next);
  partial = calloc(SENDERS, FRAME);
  partial_len = calloc(SENDERS, sizeof *partial_len);
  held = calloc(N, FRAME);
  held_len = calloc(N, sizeof *held_len);
  client_fd = malloc(N * sizeof(int));
  server_fd = malloc(N * sizeof(int));
  send_fd = malloc(SENDERS * sizeof(int));
  accepted_send_fd = malloc(SENDERS * sizeof(int));

  struct rlimit nofile = {N * 2 + SENDERS * 2 + 64, N * 2 + SENDERS * 2 + 64};
  setrlimit(RLIMIT_NOFILE, &nofile);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  bind(l, (void *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(l, (void *)&a, &al);
  listen(l, 4096);
  int one = 1;
  for (int i = 0; i < N + SENDERS; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a) < 0) {
      perror("connect");
      return 1;
    }
    int s = accept(l, 0, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (i < N)
      client_fd[i] = c, server_fd[i] = s;
    else
      send_fd[i - N] = c, accepted_send_fd[i - N] = s;
  }

  pthread_t t;
  pthread_create(&t, 0, server, 0);
  pin(1);
  int ep = watch_all(client_fd, N);
  long expected = planned * N, received = 0;
  uint32_t *lat_us = malloc(expected * sizeof *lat_us);
  struct epoll_event ev[256];
  static char buf[FRAME * MAX_GATHER * 4];
  uint64_t start = now_ns() + 200000000u, every = 1000000000u / RATE;
  uint64_t drain_until = start + (uint64_t)SECONDS * 1000000000u + 2000000000u;
  long sent = 0;
  for (;;) {
    uint64_t now = now_ns();
    while (sent < planned && now >= start + sent * every) {
      char frame[FRAME];
      memset(frame, 'x', FRAME);
      uint64_t stamp = now_ns();
      memcpy(frame, &stamp, sizeof stamp);
      if (write(send_fd[sent % SENDERS], frame, FRAME) != FRAME) {
        perror("send");
        return 1;
      }
      sent++;
      now = now_ns();
    }
    if (received == expected || now >= drain_until) break;
    int timeout_ms = 1;
    if (sent < planned) {
      uint64_t due = start + sent * every;
      timeout_ms = due > now ? (int)((due - now) / 1000000u) : 0;
    }
    int n = epoll_wait(ep, ev, 256, timeout_ms);
    for (int e = 0; e < n; e++) {
      int i = ev[e].data.u32;
      ssize_t r;
      while ((r = read(client_fd[i], buf, sizeof buf)) > 0) {
        uint64_t at = now_ns();
        for (ssize_t off = 0; off < r; off++) {
          if (!frame_byte(held[i], &held_len[i], buf[off])) continue;
          uint64_t stamp;
          memcpy(&stamp, held[i], sizeof stamp);
          if (received < expected) lat_us[received++] = (uint32_t)((at - stamp) / 1000u);
        }
      }
    }
  }
  stop_server = 1;
  pthread_join(t, 0);
  qsort(lat_us, received, sizeof *lat_us, cmp_u32);
#define PCT(p) (received ? lat_us[(long)((received - 1) * (p))] / 1000.0 : 0.0)
  printf("{\"floor\":\"fanout\",\"connections\":%d,\"messages_per_s\":%d,\"seconds\":%d,"
         "\"senders\":%d,\"deliveries_per_s\":%ld,\"expected\":%ld,\"received\":%ld,"
         "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
         "\"server_cpu_us_per_delivery\":%.2f}\n",
         N, RATE, SECONDS, SENDERS, (long)N * RATE, expected, received, PCT(0.5), PCT(0.9),
         PCT(0.99), received ? lat_us[received - 1] / 1000.0 : 0.0,
         received ? server_cpu_us / received : 0.0);
  return received == expected ? 0 : 1;
}
