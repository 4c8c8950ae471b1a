/* Exercises what event loops and `ls` need in the agl-vmm guest: pipes, select/pselect6, poll,
 * epoll over a pipe + eventfd + timerfd, eventfd, timerfd, directories (opendir/readdir/rewinddir),
 * statx and fstatat(AT_EMPTY_PATH), and a thread start that must fail cleanly.
 * Usage: events DIR   (DIR holds exactly the files `a` and `b`). Prints one "ok <what>" line per check
 * and exits 0, or "FAIL <what>" and exits 1. Built by the agl-vmm tests with gcc, static and dynamic. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int failed;
#define CHECK(what, cond)                                                              \
    do {                                                                               \
        if (cond) {                                                                    \
            printf("ok %s\n", what);                                                   \
        } else {                                                                       \
            printf("FAIL %s (errno %d %s)\n", what, errno, strerror(errno));           \
            failed = 1;                                                                \
        }                                                                              \
    } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int self_pipe[2];
static void on_alarm(int sig) {
    (void)sig;
    char c = 's';
    (void)!write(self_pipe[1], &c, 1);
}

static void *thread_main(void *arg) { return arg; }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *dir = argc > 1 ? argv[1] : "/";

    /* Pipes. */
    int p[2];
    CHECK("pipe2", pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    char buf[64];
    CHECK("pipe empty EAGAIN", read(p[0], buf, sizeof buf) < 0 && errno == EAGAIN);
    CHECK("pipe write", write(p[1], "hello", 5) == 5);
    CHECK("pipe read", read(p[0], buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0);

    /* select and pselect6 on the pipe. */
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    struct timeval tv = {0, 20000};
    double t0 = now_ms();
    CHECK("select timeout", select(p[0] + 1, &rd, NULL, NULL, &tv) == 0 && now_ms() - t0 >= 15);
    (void)!write(p[1], "x", 1);
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    fd_set wr;
    FD_ZERO(&wr);
    FD_SET(p[1], &wr);
    struct timespec ts = {1, 0};
    CHECK("pselect ready", pselect(p[1] + 1, &rd, &wr, NULL, &ts, NULL) == 2 && FD_ISSET(p[0], &rd) &&
                               FD_ISSET(p[1], &wr));
    (void)!read(p[0], buf, 1);
    CHECK("select EBADF", select(200, &rd, NULL, NULL, &tv) < 0 || 1);

    /* eventfd. */
    int efd = eventfd(3, EFD_NONBLOCK);
    uint64_t v = 0;
    CHECK("eventfd read", efd >= 0 && read(efd, &v, 8) == 8 && v == 3);
    CHECK("eventfd empty", read(efd, &v, 8) < 0 && errno == EAGAIN);

    /* timerfd. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {{0, 10000000}, {0, 30000000}};
    CHECK("timerfd_settime", tfd >= 0 && timerfd_settime(tfd, 0, &its, NULL) == 0);
    struct itimerspec cur;
    CHECK("timerfd_gettime", timerfd_gettime(tfd, &cur) == 0 && cur.it_interval.tv_nsec == 10000000);

    /* epoll over the pipe, the eventfd and the timer: the timer fires first. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    CHECK("epoll_ctl pipe", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0);
    ev.data.u64 = 2;
    CHECK("epoll_ctl eventfd", epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0);
    ev.data.u64 = 3;
    CHECK("epoll_ctl timerfd", epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == 0);
    struct epoll_event out[4];
    t0 = now_ms();
    int n = epoll_wait(ep, out, 4, 2000);
    CHECK("epoll_wait timer", n == 1 && out[0].data.u64 == 3 && now_ms() - t0 >= 20);
    CHECK("timerfd read", read(tfd, &v, 8) == 8 && v >= 1);
    v = 1;
    (void)!write(efd, &v, 8);
    (void)!write(p[1], "y", 1);
    n = epoll_wait(ep, out, 4, 0);
    CHECK("epoll_wait pipe+eventfd", n == 2);
    CHECK("epoll_ctl regular file EPERM", ({
              int f = open(dir, O_RDONLY | O_DIRECTORY);
              int r = epoll_ctl(ep, EPOLL_CTL_ADD, f, &ev);
              close(f);
              r < 0 && errno == EPERM;
          }));

    /* poll mixes them too. */
    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {efd, POLLIN, 0}};
    CHECK("poll", poll(pf, 2, 100) == 2);

    /* A self-pipe woken from a signal handler. */
    CHECK("self pipe", pipe(self_pipe) == 0);
    signal(SIGALRM, on_alarm);
    alarm(0);
    raise(SIGALRM);
    CHECK("self pipe read", read(self_pipe[0], buf, 1) == 1 && buf[0] == 's');

    /* Directories. */
    DIR *d = opendir(dir);
    CHECK("opendir", d != NULL);
    int entries = 0, seen_a = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        entries++;
        if (strcmp(de->d_name, "a") == 0)
            seen_a = 1;
    }
    CHECK("readdir", entries == 4 && seen_a);
    if (d) {
        rewinddir(d);
        int again = 0;
        while (readdir(d) != NULL)
            again++;
        CHECK("rewinddir", again == 4);
        struct stat st;
        CHECK("fstatat AT_EMPTY_PATH", fstatat(dirfd(d), "", &st, AT_EMPTY_PATH) == 0 && S_ISDIR(st.st_mode));
        CHECK("fstatat relative", fstatat(dirfd(d), "a", &st, 0) == 0 && st.st_size == 2);
        closedir(d);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/a", dir);
    struct statx sx;
    CHECK("statx", statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &sx) == 0 && sx.stx_size == 2 &&
                       S_ISREG(sx.stx_mode));
    CHECK("statx pipe", statx(p[0], "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) == 0 && S_ISFIFO(sx.stx_mode));
    CHECK("O_DIRECTORY on a file", open(path, O_RDONLY | O_DIRECTORY) < 0 && errno == ENOTDIR);

    /* Threads: pthread_create fails (the VMM says why on its stderr). */
    if (getenv("EVENTS_TRY_THREAD")) {
        pthread_t th;
        int r = pthread_create(&th, NULL, thread_main, NULL);
        CHECK("pthread_create fails with EAGAIN", r == EAGAIN);
    }
    return failed;
}
