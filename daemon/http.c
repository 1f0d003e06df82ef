/* joulecapd --metrics ADDR: the /metrics endpoint, served by libmicrohttpd on a thread of its own.
 *
 * joulecapd opens the listening socket itself (so that ":9477" means IPv6 and IPv4 where the host has IPv6,
 * and a bind error names the address) and hands it to libmicrohttpd.  A scrape takes a snapshot from the
 * exporter (no NVML call) and formats it; GET and HEAD of /metrics only.  Without libmicrohttpd at build
 * time joulecapd still builds, and --metrics fails saying what to install. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "jcd.h"

#ifdef JC_HAVE_MICROHTTPD
#include <microhttpd.h>
#endif

#define MISSING                                                                                            \
    "this joulecapd was built without libmicrohttpd, which --metrics needs: install it (Debian/Ubuntu: "    \
    "apt-get install libmicrohttpd-dev; Fedora/RHEL: dnf install libmicrohttpd-devel) and build joulecap "  \
    "again (cmake finds it through pkg-config)"

int jcd_addr_parse(const char *s, jcd_addr *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    char host[256];
    const char *port;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host) {
            jc__fmt(why, whylen, "'%s' is not an address: write [IPv6]:PORT, for example [::1]:9477", s);
            return -1;
        }
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host || memchr(s, ':', (size_t)(colon - s))) {
            jc__fmt(why, whylen, "'%s' is not an address: write HOST:PORT, [IPv6]:PORT or :PORT (every interface), "
                    "for example 127.0.0.1:9477", s);
            return -1;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
    }
    unsigned long p = 0;
    size_t n = 0;
    for (; port[n] >= '0' && port[n] <= '9' && n < 6; n++) p = p * 10 + (unsigned long)(port[n] - '0');
    if (n == 0 || port[n] || p > 65535) {
        jc__fmt(why, whylen, "'%s': the port must be a number from 0 to 65535", s);
        return -1;
    }
    if (!host[0]) {
        out->any = 1;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons((uint16_t)p);
        out->len = sizeof *a;
        jc__fmt(out->text, sizeof out->text, ":%lu", p);
        return 0;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char ps[8];
    snprintf(ps, sizeof ps, "%lu", p);
    int r = getaddrinfo(host, ps, &hints, &res);
    if (r != 0 || !res || res->ai_addrlen > sizeof out->ss) {
        jc__fmt(why, whylen, "'%s': cannot resolve '%s': %s", s, host, r ? gai_strerror(r) : "no address");
        if (res) freeaddrinfo(res);
        return -1;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    jc__fmt(out->text, sizeof out->text, "%s", s);
    return 0;
}

/* "127.0.0.1:9477" or "[::1]:9477" of a bound socket. */
static void name_of(int fd, char *buf, size_t len) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
            port = ntohs(a->sin6_port);
            jc__fmt(buf, len, "[%s]:%u", h, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
    }
    jc__fmt(buf, len, "%s:%u", h, port);
}

/* The listening socket: 0 and *fd, or -1 with why. */
static int listen_tcp(const jcd_addr *a, int *fd_out, char *why, size_t whylen) {
    jcd_addr v4;
    const jcd_addr *use = a;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 && a->any && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT)) {
        /* No IPv6 on this host: every IPv4 interface. */
        memset(&v4, 0, sizeof v4);
        struct sockaddr_in *s4 = (struct sockaddr_in *)&v4.ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
        s4->sin_port = ((const struct sockaddr_in6 *)&a->ss)->sin6_port;
        v4.len = sizeof *s4;
        use = &v4;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    }
    if (fd < 0) {
        jc__fmt(why, whylen, "--metrics %s: cannot create a socket: %s", a->text, strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (use->ss.ss_family == AF_INET6 && a->any) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (const struct sockaddr *)&use->ss, use->len) != 0 || listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        jc__fmt(why, whylen, "--metrics %s: cannot listen: %s%s", a->text, strerror(e),
                e == EADDRINUSE ? " (another program has this port: choose another, or stop it)"
                : e == EADDRNOTAVAIL ? " (no interface of this host has that address)"
                : e == EACCES ? " (ports below 1024 need root)" : "");
        return -1;
    }
    *fd_out = fd;
    return 0;
}

#ifdef JC_HAVE_MICROHTTPD

struct jcd_http {
    struct MHD_Daemon *d;
    jcd_exporter *e;
    int fd;
};

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    jcd_log("metrics: libmicrohttpd: %s", msg);
}

static mhd_result reply(struct MHD_Connection *conn, unsigned code, const char *type, char *body, size_t len,
                        int must_free) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (must_free) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    mhd_result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static char ROOT[] = "joulecapd: Prometheus metrics at /metrics (docs/daemon.md)\n";
static char NOT_FOUND_TEXT[] = "not found: joulecapd serves /metrics only\n";
static char METHOD_TEXT[] = "method not allowed: GET or HEAD /metrics\n";
static char OOM_TEXT[] = "joulecapd is out of memory\n";

static mhd_result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                         const char *version, const char *upload, size_t *upload_len, void **con_cls) {
    (void)version;
    (void)upload;
    (void)con_cls;
    jcd_http *h = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", METHOD_TEXT,
                     sizeof METHOD_TEXT - 1, 0);
    if (*upload_len) { /* a GET with a body: ignored */
        *upload_len = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/") == 0)
        return reply(conn, MHD_HTTP_OK, "text/plain; charset=utf-8", ROOT, sizeof ROOT - 1, 0);
    if (strcmp(url, "/metrics") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", NOT_FOUND_TEXT, sizeof NOT_FOUND_TEXT - 1,
                     0);
    int om = jcd_metrics_wants_openmetrics(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept"));
    jcd_msnap *snap = malloc(sizeof *snap);
    jcd_job *jobs = NULL;
    char *text = NULL;
    size_t len = 0;
    if (snap) {
        jcd_exporter_snapshot(h->e, snap, &jobs);
        text = jcd_metrics_format(snap, om, &len);
    }
    free(jobs);
    free(snap);
    if (!text)
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", OOM_TEXT,
                     sizeof OOM_TEXT - 1, 0);
    return reply(conn, MHD_HTTP_OK, om ? JCD_CT_OPENMETRICS : JCD_CT_TEXT, text, len, 1);
}

int jcd_http_available(char *why, size_t whylen) {
    (void)why;
    (void)whylen;
    return 1;
}

int jcd_http_start(const jcd_addr *a, jcd_exporter *e, jcd_http **out, char *bound, size_t boundlen, char *why,
                   size_t whylen) {
    *out = NULL;
    jcd_http *h = calloc(1, sizeof *h);
    if (!h) {
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    h->e = e;
    if (listen_tcp(a, &h->fd, why, whylen) != 0) {
        free(h);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC; /* ITC: quiesce at stop */
#ifdef __linux__
    flags |= MHD_USE_EPOLL;
#endif
    if (getsockname(h->fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (!h->d) {
        close(h->fd);
        free(h);
        jc__fmt(why, whylen, "--metrics %s: libmicrohttpd did not start (its log line above says why)", a->text);
        return -1;
    }
    char name[200];
    name_of(h->fd, name, sizeof name);
    jc__fmt(bound, boundlen, "http://%s/metrics", name);
    *out = h;
    return 0;
}

void jcd_http_stop(jcd_http *h) {
    if (!h) return;
    /* Quiesced first, the listening socket is ours again: closed once libmicrohttpd is done with it. */
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    MHD_stop_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    free(h);
}

#else /* no libmicrohttpd */

struct jcd_http {
    int unused;
};

int jcd_http_available(char *why, size_t whylen) {
    jc__fmt(why, whylen, "%s", MISSING);
    return 0;
}

int jcd_http_start(const jcd_addr *a, jcd_exporter *e, jcd_http **out, char *bound, size_t boundlen, char *why,
                   size_t whylen) {
    (void)a;
    (void)e;
    (void)bound;
    (void)boundlen;
    (void)listen_tcp;
    (void)name_of;
    *out = NULL;
    jc__fmt(why, whylen, "%s", MISSING);
    return -1;
}

void jcd_http_stop(jcd_http *h) { (void)h; }

#endif
