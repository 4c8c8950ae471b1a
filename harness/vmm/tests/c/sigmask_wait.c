/* A wait with a temporary signal mask (the pattern of servers that keep SIGTERM blocked except while
 * they wait): SIGTERM is blocked, its handler sets a flag, and the program loops in MODE (ppoll,
 * pselect6, epoll_pwait, epoll_pwait2 or sigsuspend) with a mask that unblocks SIGTERM (and blocks
 * SIGUSR2). Linux delivers the SIGTERM that interrupts the wait under the temporary mask and restores the
 * caller's mask only after the handler (TIF_RESTORE_SIGMASK). Checks: a wait that ends normally restores
 * the mask at once; the interrupted wait returns EINTR after the handler ran; the handler ran with the
 * temporary mask plus SIGTERM; its frame holds the caller's mask; afterwards the caller's mask (SIGTERM
 * blocked, SIGUSR2 not) is back and nothing is pending.
 * Usage: sigmask_wait MODE; prints "ready" once it waits for SIGTERM, then "ok MODE" and exits 0, or
 * "FAIL ..." and exits 1. Built by the agl-vmm tests with gcc -static. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif

static volatile sig_atomic_t got, frame_mask_ok, handler_mask_ok;

static void on_term(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    sigset_t now;
    (void)si;
    got = sig;
    /* The mask rt_sigreturn restores: the caller's, not the temporary one. */
    frame_mask_ok = sigismember(&uc->uc_sigmask, SIGTERM) == 1 && sigismember(&uc->uc_sigmask, SIGUSR2) == 0;
    /* In force during the handler: the temporary mask plus the signal itself. */
    sigprocmask(SIG_SETMASK, NULL, &now);
    handler_mask_ok = sigismember(&now, SIGTERM) == 1 && sigismember(&now, SIGUSR2) == 1;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* 1 if the caller's mask is in force: SIGTERM blocked, SIGUSR2 not. */
static int callers_mask(void) {
    sigset_t now;
    if (sigprocmask(SIG_SETMASK, NULL, &now) != 0)
        return 0;
    return sigismember(&now, SIGTERM) == 1 && sigismember(&now, SIGUSR2) == 0;
}

#define FAIL(...)                                                                      \
    do {                                                                               \
        printf("FAIL " __VA_ARGS__);                                                   \
        printf("\n");                                                                  \
        return 1;                                                                      \
    } while (0)

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "ppoll";
    sigset_t blocked, temp, pending;
    struct sigaction sa;
    struct epoll_event ev;
    int ep, r, e;

    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    if (sigprocmask(SIG_SETMASK, &blocked, NULL) != 0)
        FAIL("sigprocmask: %s", strerror(errno));
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_term;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        FAIL("sigaction: %s", strerror(errno));
    sigemptyset(&temp);
    sigaddset(&temp, SIGUSR2);
    ep = epoll_create1(0);
    if (ep < 0)
        FAIL("epoll_create1: %s", strerror(errno));

    /* A wait that is not interrupted puts the caller's mask back at once. */
    struct timespec zero = {0, 0};
    if (ppoll(NULL, 0, &zero, &temp) != 0)
        FAIL("ppoll timeout 0: %s", strerror(errno));
    if (!callers_mask())
        FAIL("after a ppoll that timed out, the caller's mask is not back");

    printf("ready\n");
    fflush(stdout);
    double deadline = now_ms() + 20000;
    for (;;) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        if (strcmp(mode, "ppoll") == 0)
            r = ppoll(NULL, 0, &ts, &temp);
        else if (strcmp(mode, "pselect6") == 0)
            r = pselect(0, NULL, NULL, NULL, &ts, &temp);
        else if (strcmp(mode, "epoll_pwait") == 0)
            r = epoll_pwait(ep, &ev, 1, 200, &temp);
        else if (strcmp(mode, "epoll_pwait2") == 0)
            r = syscall(SYS_epoll_pwait2, ep, &ev, 1, &ts, &temp, 8);
        else if (strcmp(mode, "sigsuspend") == 0)
            r = sigsuspend(&temp);
        else
            FAIL("unknown mode %s", mode);
        e = errno;
        if (r == -1 && e == EINTR)
            break;
        if (r < 0)
            FAIL("%s: %s", mode, strerror(e));
        if (now_ms() > deadline)
            FAIL("%s: no EINTR within 20 s (handler ran: %d)", mode, (int)got);
    }
    if (got != SIGTERM)
        FAIL("%s returned EINTR but the SIGTERM handler did not run", mode);
    if (!handler_mask_ok)
        FAIL("%s: the handler did not run with the temporary mask plus SIGTERM", mode);
    if (!frame_mask_ok)
        FAIL("%s: the handler's frame does not hold the caller's mask", mode);
    if (!callers_mask())
        FAIL("%s: after EINTR the caller's mask (SIGTERM blocked) is not back", mode);
    if (sigpending(&pending) != 0 || sigismember(&pending, SIGTERM) == 1)
        FAIL("%s: SIGTERM is still pending", mode);
    printf("ok %s\n", mode);
    return 0;
}
