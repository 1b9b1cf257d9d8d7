/*
 * rollout.logs._linescan: sort a block of syslog lines before Python sees them.
 *
 * A provider's maillog is mostly lines that can never matter to detection
 * (connects, cleanup, local deliveries, other programs). scan() walks a block of
 * complete lines and returns one row per line that Python must look at; every
 * other line is skipped here. It never decides what a line means beyond that:
 *
 *   SKIP      a line LineParser would turn into no event (counted, not returned)
 *   ACCEPT    Postfix smtpd "QID: client=..."       (qid span returned)
 *   SENDER    Postfix qmgr "QID: from=<...>, size=... (queue active)"
 *   REMOVED   Postfix qmgr "QID: removed"
 *   DELIVERY  Postfix smtp/lmtp "QID: to=..."
 *   LOGIN     Dovecot "pop3-login: Login: ..." / "imap-login: Logged in: ..."
 *   SMTPD     Postfix smtpd warning or refusal: Python parses the message
 *   DOVECOT   Dovecot "pop3(user)...": a session end, Python parses the message
 *   OTHER     anything else (other envelopes, Exim, Courier, ...): the full line parser
 *
 * The envelope rules are those of rollout/logs/envelope.py (RFC 3164 and RFC 3339
 * with a host); when in doubt a line is OTHER, so the Python parser stays the
 * reference. tests/test_linescan.py checks both give the same events.
 *
 * Row: (kind, line_start, line_end, stamp_start, stamp_end, host_start, host_end,
 *       prog_start, prog_end, msg_start, qid_start, qid_end)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdlib.h>
#include <arpa/inet.h>

enum { K_OTHER, K_ACCEPT, K_SENDER, K_REMOVED, K_DELIVERY, K_LOGIN, K_SMTPD, K_DOVECOT, K_SKIP };

typedef struct {
    const char *stamp, *stamp_end, *host, *host_end, *prog, *prog_end, *msg;
    const char *qid, *qid_end;
} Line;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
/* host and program tokens: printable ASCII only, or the line goes to the Python parser
   (its \s also matches Unicode spaces and \x1c-\x1f) */
static int is_plain(char c) { return c > ' ' && c < 0x7f; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_alnum(char c) { return is_digit(c) || is_upper(c) || is_lower(c); }
static int is_hex_upper(char c) { return is_digit(c) || (c >= 'A' && c <= 'F'); }
static int is_long_qid(char c) { return is_alnum(c) && !strchr("AEIOUaeiou", c); }

static int starts(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0;
}

static int digits(const char *p, const char *e, int n)
{
    if (e - p < n) return 0;
    for (int i = 0; i < n; i++)
        if (!is_digit(p[i])) return 0;
    return 1;
}

/* RFC 3164: [<PRI>]Mmm [ d]d hh:mm:ss[.frac] ; returns the end of the stamp (before .frac) or NULL */
static const char *bsd_stamp(const char *p, const char *e, const char **start)
{
    if (p < e && *p == '<') {
        const char *q = p + 1;
        int n = 0;
        while (q < e && is_digit(*q) && n < 4) q++, n++;
        if (n < 1 || n > 3 || q >= e || *q != '>') return NULL;
        p = q + 1;
    }
    *start = p;
    if (e - p < 14 || !is_upper(p[0]) || !is_lower(p[1]) || !is_lower(p[2]) || p[3] != ' ') return NULL;
    p += 4;
    if ((p[0] == ' ' || is_digit(p[0])) && is_digit(p[1]) && p + 2 < e && p[2] == ' ') p += 2;
    else if (is_digit(p[0]) && p[1] == ' ') p += 1;
    else return NULL;
    p += 1; /* the space */
    if (!digits(p, e, 2) || e - p < 8 || p[2] != ':' || !digits(p + 3, e, 2) || p[5] != ':' || !digits(p + 6, e, 2)) return NULL;
    return p + 8;
}

/* RFC 3339: YYYY-MM-DDThh:mm:ss[.frac][Z|+hh[:]mm] */
static const char *iso_stamp(const char *p, const char *e)
{
    if (!digits(p, e, 4) || e - p < 19 || p[4] != '-' || !digits(p + 5, e, 2) || p[7] != '-' || !digits(p + 8, e, 2) || p[10] != 'T'
        || !digits(p + 11, e, 2) || p[13] != ':' || !digits(p + 14, e, 2) || p[16] != ':' || !digits(p + 17, e, 2))
        return NULL;
    p += 19;
    if (p < e && *p == '.') {
        const char *q = p + 1;
        while (q < e && is_digit(*q)) q++;
        if (q == p + 1) return NULL;
        p = q;
    }
    if (p < e && *p == 'Z') return p + 1;
    if (p < e && (*p == '+' || *p == '-')) {
        const char *q = p + 1;
        if (!digits(q, e, 2)) return NULL;
        q += 2;
        if (q < e && *q == ':') q++;
        if (!digits(q, e, 2)) return NULL;
        return q + 2;
    }
    return p;
}

/* stamp, host, program[pid]: — 0 when the line is not plainly of that shape */
static int envelope(const char *p, const char *e, Line *l)
{
    const char *q;
    int iso = is_digit(*p);
    if (iso) {
        l->stamp = p;
        q = iso_stamp(p, e);
        if (q == NULL) return 0;
        l->stamp_end = q;
    } else {
        q = bsd_stamp(p, e, &l->stamp);
        if (q == NULL) return 0;
        l->stamp_end = q;
        if (q < e && *q == '.') {
            const char *f = q + 1;
            while (f < e && is_digit(*f)) f++;
            if (f == q + 1) return 0;
            q = f;
        }
    }
    if (q >= e || *q != ' ') return 0;
    l->host = ++q;
    while (q < e && is_plain(*q) && *q != ':' && *q != '[' && !(*q == '<' && !iso)) q++;
    if (q == l->host || q >= e || *q != ' ') return 0;
    l->host_end = q;
    l->prog = ++q;
    while (q < e && is_plain(*q) && *q != '[' && *q != ':') q++;
    if (q == l->prog || q >= e || is_space(*q)) return 0;
    l->prog_end = q;
    if (q < e && *q == '[') {
        const char *d = q + 1;
        while (d < e && is_digit(*d)) d++;
        if (d == q + 1 || d >= e || *d != ']') return 0;
        q = d + 1;
    }
    if (e - q < 2 || q[0] != ':' || q[1] != ' ') return 0;
    l->msg = q + 2;
    return 1;
}

/* "QID: " at p (Postfix short or long queue ID); sets the span */
static int queue_id(const char *p, const char *e, Line *l)
{
    const char *q = p;
    int hex = 1, lng = 1;
    while (q < e && is_alnum(*q)) {
        hex &= is_hex_upper(*q);
        lng &= is_long_qid(*q);
        q++;
    }
    long n = q - p;
    if (!((hex && n >= 6) || (lng && n >= 10))) return 0;
    if (e - q < 2 || q[0] != ':' || q[1] != ' ') return 0;
    l->qid = p;
    l->qid_end = q;
    return 1;
}

static int ends_with(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && memcmp(e - n, lit, n) == 0;
}

static int contains(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    for (; e - p >= (long)n; p++) {
        p = memchr(p, lit[0], e - p);
        if (p == NULL || e - p < (long)n) return 0;
        if (memcmp(p, lit, n) == 0) return 1;
    }
    return 0;
}

static int is_word(const char *p, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - p) == n && memcmp(p, word, n) == 0;
}

static int smtpd(const char *m, const char *e, Line *l)
{
    if (starts(m, e, "warning:")) return K_SMTPD;
    if (starts(m, e, "connect from") || starts(m, e, "disconnect from") || starts(m, e, "lost connection") || starts(m, e, "timeout"))
        return K_SKIP;
    const char *q = m;
    while (q < e && is_alnum(*q)) q++;
    if (q - m < 6 || e - q < 2 || q[0] != ':' || q[1] != ' ') return K_SKIP; /* not "NOQUEUE: " or "QID: ": no event */
    if (starts(q + 2, e, "client=") && q - m <= 31 && queue_id(m, e, l)) return K_ACCEPT;
    return K_SMTPD;
}

static int postfix(const char *daemon, const char *daemon_end, const char *m, const char *e, Line *l)
{
    if (is_word(daemon, daemon_end, "smtpd")) return smtpd(m, e, l);
    if (is_word(daemon, daemon_end, "qmgr")) {
        if (!queue_id(m, e, l)) return K_SKIP;
        const char *r = l->qid_end + 2;
        if (is_word(r, e, "removed")) return K_REMOVED;
        if (!starts(r, e, "from=<") || !ends_with(r, e, "(queue active)")) return K_SKIP;
        const char *gt = memchr(r + 6, '>', e - r - 6);
        if (gt == NULL || !(starts(gt, e, ">, size=") || starts(gt, e, ">, status="))) return K_SKIP;
        return K_SENDER;
    }
    if (is_word(daemon, daemon_end, "smtp") || is_word(daemon, daemon_end, "lmtp")) {
        if (!queue_id(m, e, l) || !starts(l->qid_end + 2, e, "to=")) return K_SKIP;
        return K_DELIVERY;
    }
    if (is_word(daemon, daemon_end, "pickup")) return K_OTHER;
    static const char *local[] = {"local", "virtual", "pipe", "error", "discard", "relay", "retry", NULL};
    for (int i = 0; local[i]; i++)
        if (is_word(daemon, daemon_end, local[i])) /* local deliveries matter only as a content-filter hop */
            return contains(m, e, "queued as") ? K_OTHER : K_SKIP;
    return K_SKIP;
}

static int dovecot(const char *m, const char *e)
{
    if (starts(m, e, "Info: ")) m += 6;
    if (starts(m, e, "pop3-login: ") || starts(m, e, "imap-login: ")) {
        const char *q = m + 12;
        if (starts(q, e, "Info: ")) q += 6;
        return starts(q, e, "Login: ") || starts(q, e, "Logged in: ") ? K_LOGIN : K_SKIP;
    }
    if (starts(m, e, "pop3(") || starts(m, e, "imap(") || starts(m, e, "POP3(") || starts(m, e, "IMAP(")) return K_DOVECOT;
    return K_SKIP;
}

/* Exim, Courier, Cyrus, UW: programs the line parser knows besides Postfix and Dovecot */
static int other_known(const char *p, const char *e)
{
    static const char *names[] = {"pop3", "pop3s", "imap", "imaps", "pop3d", "pop3d-ssl", "courierpop3login",
                                  "imapd", "imapd-ssl", "imaplogin", "ipop3d", NULL};
    if (starts(p, e, "exim")) return 1;
    const char *last = p;
    for (const char *q = p; q < e; q++)
        if (*q == '/') last = q + 1;
    for (int i = 0; names[i]; i++)
        if (is_word(last, e, names[i])) return 1;
    return 0;
}

static int classify(const char *p, const char *e, Line *l)
{
    if (p == e || !envelope(p, e, l)) return K_OTHER;
    const char *prog = l->prog, *prog_end = l->prog_end;
    if (starts(prog, prog_end, "postfix")) {
        const char *slash = NULL;
        for (const char *q = prog; q < prog_end; q++)
            if (*q == '/') slash = q;
        if (slash == NULL) return K_OTHER;
        return postfix(slash + 1, prog_end, l->msg, e, l);
    }
    if (is_word(prog, prog_end, "dovecot")) return dovecot(l->msg, e);
    return other_known(prog, prog_end) ? K_OTHER : K_SKIP;
}

/* -- messages of the block: inbound mail that can never matter is dropped here --------------- */

typedef struct {
    int kind;
    const char *start, *end;
    Line l;
} Row;

typedef struct {
    const Row *first; /* its first row: the key is (host, instance, qid) of that row */
    Py_ssize_t accept, removed; /* row numbers, -1 when absent */
    int accepts, removals, keep;
} Message;

typedef struct {
    int family; /* 4 or 6 */
    unsigned char net[16];
    int prefix;
} Network;

static int in_network(const unsigned char *addr, int family, const Network *n)
{
    if (n->family != family) return 0;
    int bits = n->prefix;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((addr[i] & mask) != (n->net[i] & mask)) return 0;
    }
    return 1;
}

/* A plain "client=host[ip]" (no SASL or orig_client fields) from an untrusted, parseable address? */
static int plain_untrusted(const Row *r, const Network *nets, Py_ssize_t n_nets)
{
    const char *rest = r->l.qid_end + 2 + 7, *e = r->end;
    for (const char *q = rest; q + 1 < e; q++)
        if (q[0] == ',' && q[1] == ' ') return 0; /* more fields: let Python read them */
    const char *open = NULL, *close = NULL;
    for (const char *q = rest; q < e; q++) {
        if (*q == '[') open = q;
        if (*q == ']') close = q;
    }
    if (open == NULL || close == NULL || close < open || close - open - 1 >= 64) return 0;
    char ip[64];
    memcpy(ip, open + 1, close - open - 1);
    ip[close - open - 1] = '\0';
    unsigned char addr[16];
    int family;
    if (inet_pton(AF_INET, ip, addr) == 1) {
        family = 4;
    } else if (inet_pton(AF_INET6, ip, addr) == 1) {
        family = 6;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) {
            memmove(addr, addr + 12, 4);
            family = 4;
        }
    } else {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n_nets; i++)
        if (in_network(addr, family, &nets[i])) return 0;
    return 1;
}

/* the Postfix instance: the program up to its first '/' (postfix/submission/smtpd shares postfix's queue) */
static const char *instance_end(const Line *l)
{
    const char *slash = memchr(l->prog, '/', l->prog_end - l->prog);
    return slash ? slash : l->prog_end;
}

static int same_key(const Row *a, const Row *b)
{
    const Line *x = &a->l, *y = &b->l;
    const char *xi = instance_end(x), *yi = instance_end(y);
    return x->qid_end - x->qid == y->qid_end - y->qid && memcmp(x->qid, y->qid, x->qid_end - x->qid) == 0
        && x->host_end - x->host == y->host_end - y->host && memcmp(x->host, y->host, x->host_end - x->host) == 0
        && xi - x->prog == yi - y->prog && memcmp(x->prog, y->prog, xi - x->prog) == 0;
}

static size_t key_hash(const Row *r)
{
    size_t h = 1469598103934665603ULL;
    for (const char *q = r->l.qid; q < r->l.qid_end; q++) h = (h ^ (unsigned char)*q) * 1099511628211ULL;
    for (const char *q = r->l.host; q < r->l.host_end; q++) h = (h ^ (unsigned char)*q) * 1099511628211ULL;
    return h;
}

static int is_message_row(const Row *r)
{
    return r->l.qid != NULL && (r->kind == K_ACCEPT || r->kind == K_SENDER || r->kind == K_REMOVED || r->kind == K_DELIVERY
                                || r->kind == K_OTHER);
}

/* Mark rows of complete, plain inbound messages without remote deliveries (drop[i] = 1). */
static int drop_inbound(const Row *rows, Py_ssize_t n, char *drop, const Network *nets, Py_ssize_t n_nets)
{
    size_t size = 64;
    while (size < (size_t)n * 2) size <<= 1;
    Message *table = calloc(size, sizeof(Message));
    Py_ssize_t *slot_of = malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    if (table == NULL || slot_of == NULL) {
        free(table);
        free(slot_of);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Row *r = &rows[i];
        slot_of[i] = -1;
        if (!is_message_row(r)) continue;
        size_t s = key_hash(r) & (size - 1);
        while (table[s].first != NULL && !same_key(table[s].first, r)) s = (s + 1) & (size - 1);
        Message *m = &table[s];
        if (m->first == NULL) {
            m->first = r;
            m->accept = m->removed = -1;
        }
        slot_of[i] = (Py_ssize_t)s;
        switch (r->kind) {
        case K_ACCEPT:
            m->accepts++;
            m->accept = i;
            if (!plain_untrusted(r, nets, n_nets)) m->keep = 1;
            break;
        case K_REMOVED:
            m->removals++;
            m->removed = i;
            break;
        case K_SENDER:
            break;
        default: /* a remote delivery, or a line for the Python parser */
            m->keep = 1;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (slot_of[i] < 0) continue;
        const Message *m = &table[slot_of[i]];
        drop[i] = !m->keep && m->accepts == 1 && m->removals == 1 && m->accept < m->removed && m->accept <= i;
    }
    free(table);
    free(slot_of);
    return 0;
}

static int parse_networks(PyObject *list, Network **out, Py_ssize_t *n)
{
    *n = PySequence_Size(list);
    if (*n < 0) return -1;
    *out = calloc(*n ? *n : 1, sizeof(Network));
    if (*out == NULL) return -1;
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PySequence_GetItem(list, i);
        Py_buffer net;
        int family, prefix;
        if (item == NULL || !PyArg_ParseTuple(item, "iy*i", &family, &net, &prefix)) {
            Py_XDECREF(item);
            return -1;
        }
        (*out)[i].family = family;
        (*out)[i].prefix = prefix;
        memcpy((*out)[i].net, net.buf, net.len > 16 ? 16 : net.len);
        PyBuffer_Release(&net);
        Py_DECREF(item);
    }
    return 0;
}

static PyObject *row_tuple(const Row *r, const char *base)
{
    Py_ssize_t n = r->kind == K_OTHER ? 3 : 12;
    PyObject *t = PyTuple_New(n);
    if (t == NULL) return NULL;
    const char *ls = r->start;
    Py_ssize_t v[12] = {r->kind, r->start - base, r->end - base};
    if (n == 12) {
        const Line *l = &r->l;
        Py_ssize_t rel[] = {l->stamp - ls, l->stamp_end - ls, l->host - ls, l->host_end - ls, l->prog - ls, l->prog_end - ls,
                            l->msg - ls, l->qid ? l->qid - ls : 0, l->qid_end ? l->qid_end - ls : 0};
        memcpy(v + 3, rel, sizeof rel);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyLong_FromSsize_t(v[i]);
        if (x == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, x);
    }
    return t;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    PyObject *trusted, *result = NULL, *list = NULL;
    Row *rows = NULL;
    char *drop = NULL;
    Network *nets = NULL;
    Py_ssize_t n_nets = 0, n = 0, cap = 1024, lines = 0, skipped = 0, dropped[K_SKIP] = {0};
    if (!PyArg_ParseTuple(args, "y*O", &view, &trusted)) return NULL;
    if (parse_networks(trusted, &nets, &n_nets) < 0) goto done;
    const char *base = view.buf, *end = base + view.len;
    rows = malloc(cap * sizeof(Row));
    if (rows == NULL) goto nomem;
    for (const char *p = base; p < end;) {
        const char *nl = memchr(p, '\n', end - p);
        const char *e = nl ? nl : end;
        Row r = {0};
        r.start = p;
        r.end = e;
        r.kind = classify(p, e, &r.l);
        lines++;
        if (r.kind == K_SKIP) {
            skipped++;
        } else {
            if (r.kind == K_OTHER && r.l.msg != NULL && starts(r.l.prog, r.l.prog_end, "postfix"))
                queue_id(r.l.msg, e, &r.l); /* a Postfix line for the Python parser still belongs to its message */
            if (n == cap) {
                Row *grown = realloc(rows, (cap *= 2) * sizeof(Row));
                if (grown == NULL) goto nomem;
                rows = grown;
            }
            rows[n++] = r;
        }
        if (nl == NULL) break;
        p = nl + 1;
    }
    drop = calloc(n ? n : 1, 1);
    if (drop == NULL || drop_inbound(rows, n, drop, nets, n_nets) < 0) goto nomem;
    list = PyList_New(0);
    if (list == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (drop[i]) {
            dropped[rows[i].kind]++;
            continue;
        }
        PyObject *row = row_tuple(&rows[i], base);
        if (row == NULL || PyList_Append(list, row) < 0) {
            Py_XDECREF(row);
            goto done;
        }
        Py_DECREF(row);
    }
    result = Py_BuildValue("(Onn(nnnnnnnn))", list, lines, skipped, dropped[0], dropped[1], dropped[2], dropped[3], dropped[4],
                           dropped[5], dropped[6], dropped[7]);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    Py_XDECREF(list);
    free(rows);
    free(drop);
    free(nets);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(block, trusted) -> (rows, lines, skipped, dropped): the lines of a block of complete lines that Python must parse.\n"
     "trusted: [(4 or 6, network address bytes, prefix length)]; dropped: rows of plain inbound messages, per kind."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linescan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__linescan(void) { return PyModule_Create(&module); }
