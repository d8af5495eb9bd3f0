// The kernel's floor for one small write on loopback TCP, with nothing of
// chatwire in it: N connections; the writer (pinned to core 0) writes one
// 80-byte frame (in BATCH iovecs) to each connection in turn, ROUNDS times;
// a reader thread (pinned to core 1) drains them with epoll, as a client
// would. Prints the writer thread's wall, user and system time per write.
//
//   gcc -O2 -pthread -o /tmp/loopback_write benches/floor/loopback_write.c
//   /tmp/loopback_write 1000 200      # N ROUNDS [BATCH]
//
// See BENCHMARKS.md ("Why 200k/s at p99 <= 10 ms is out of reach here").
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <time.h>
static int N, ROUNDS, BATCH;
static int *rfd;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static void *reader(void *a){pin(1);int ep=epoll_create1(0);for(int i=0;i<N;i++){struct epoll_event e={.events=EPOLLIN,.data.fd=rfd[i]};epoll_ctl(ep,EPOLL_CTL_ADD,rfd[i],&e);}
 char buf[65536];struct epoll_event ev[256];long total=0,want=(long)N*ROUNDS*80;
 while(total<want){int n=epoll_wait(ep,ev,256,1000);for(int i=0;i<n;i++){ssize_t r=read(ev[i].data.fd,buf,sizeof buf);if(r>0)total+=r;}}
 return 0;}
int main(int argc,char**argv){N=atoi(argv[1]);ROUNDS=atoi(argv[2]);BATCH=argc>3?atoi(argv[3]):1;
 int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)};
 bind(l,(void*)&a,sizeof a);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);listen(l,4096);
 rfd=malloc(N*sizeof(int));int*wfd=malloc(N*sizeof(int));
 for(int i=0;i<N;i++){rfd[i]=socket(AF_INET,SOCK_STREAM,0);connect(rfd[i],(void*)&a,sizeof a);wfd[i]=accept(l,0,0);int one=1;setsockopt(wfd[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);}
 pthread_t t;pthread_create(&t,0,reader,0);pin(0);
 char frame[80];memset(frame,'x',80);struct iovec iov[64];for(int i=0;i<64;i++){iov[i].iov_base=frame;iov[i].iov_len=80/BATCH;}
 struct rusage r0,r1;getrusage(RUSAGE_THREAD,&r0);struct timespec t0,t1;clock_gettime(CLOCK_MONOTONIC,&t0);
 for(int r=0;r<ROUNDS;r++)for(int i=0;i<N;i++){if(writev(wfd[i],iov,BATCH)<0){perror("w");return 1;}}
 clock_gettime(CLOCK_MONOTONIC,&t1);getrusage(RUSAGE_THREAD,&r1);
 double us=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)*1e6+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec);
 double ss=(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)*1e6+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec);
 double wall=(t1.tv_sec-t0.tv_sec)*1e6+(t1.tv_nsec-t0.tv_nsec)/1e3;long w=(long)N*ROUNDS;
 printf("conns %d writes %ld: wall %.2f us/write, user %.2f, sys %.2f us/write\n",N,w,wall/w,us/w,ss/w);
 pthread_join(t,0);return 0;}
