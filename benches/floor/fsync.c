// The disk's floor for a durable commit, with nothing of chatwire or
// SQLite in it: one thread appends PAGES pages of 4 KiB to a file in DIR
// and then calls fdatasync, ROUNDS times, as a write-ahead log's commit
// does (SQLite's WAL with synchronous=FULL syncs the log once per commit).
// Prints commits per second and the latency of one commit (p50, p99, max).
// The most durable commits one writer can make in a second on this disk is
// the commits/s with PAGES=1; group commit spreads each over many messages.
//
//   gcc -O2 -o /tmp/fsync_floor benches/floor/fsync.c
//   /tmp/fsync_floor DIR 2000 1      # DIR ROUNDS [PAGES]
//
// See BENCHMARKS.md ("The durable store").
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s DIR ROUNDS [PAGES]\n", argv[0]);
    return 2;
  }
  int rounds = atoi(argv[2]);
  int pages = argc > 3 ? atoi(argv[3]) : 1;
  if (rounds < 1 || pages < 1) return 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/fsync-floor.tmp", argv[1]);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  char page[4096];
  memset(page, 'x', sizeof page);
  double *lat = malloc(sizeof(double) * rounds);
  double start = now();
  for (int i = 0; i < rounds; i++) {
    double t0 = now();
    for (int p = 0; p < pages; p++) {
      if (write(fd, page, sizeof page) != (ssize_t)sizeof page) {
        perror("write");
        return 1;
      }
    }
    if (fdatasync(fd) != 0) {
      perror("fdatasync");
      return 1;
    }
    lat[i] = now() - t0;
  }
  double wall = now() - start;
  close(fd);
  unlink(path);
  qsort(lat, rounds, sizeof(double), cmp);
  printf("{\"dir\":\"%s\",\"rounds\":%d,\"pages\":%d,\"commits_per_s\":%.0f,"
         "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
         argv[1], rounds, pages, rounds / wall, lat[rounds / 2] * 1e3,
         lat[rounds * 99 / 100] * 1e3, lat[rounds - 1] * 1e3);
  return 0;
}
