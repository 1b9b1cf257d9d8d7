/*
 * rollout.logs._linescan: the scanner's C line classifier and event builder.
 *
 * What it does today. scan() walks a block of complete lines without holding the GIL and
 *   1. skips every line that can never be an event (connects, cleanup, local deliveries,
 *      programs no parser reads): counted, never returned;
 *   2. drops whole plain inbound messages (accepted from an untrusted address without SMTP
 *      AUTH, no remote delivery, every line in the block): counted per kind;
 *   3. builds the common events itself, as objects of the classes Python hands in: POP3/IMAP
 *      logins and session ends (Dovecot), relay refusals, and the lines of a submitted message;
 *      a message whole in the block becomes one CompleteMessage (or, authenticated, only a count
 *      in the block's AuthCounts), a login whose session ends in the block carries that end,
 *      exactly as rollout.logs.join.join_complete would join them;
 *   4. returns every other line as a row with its envelope split, for the Python parsers;
 *   5. joins a block's messages and pairs its sessions without the GIL too, and says when nothing is
 *      left for join_complete (most blocks), so the block's events go to the detector as they are.
 * Two of its event classes are its own, compact (one object holding its line, the rest read from it
 * when asked): Refusal, equal to rollout.logs.events.Refusal, for the relay refusals it reads, and
 * LoginRecord, the record of a login the detector keeps. For the detector it also holds its two loops
 * over every login: filing a LoginRun (file_logins) and sweeping out expired windows (prune_logins).
 * Rows: (kind, line_start, line_end[, stamp_start, stamp_end, host_start, host_end, prog_start,
 * prog_end, msg_start, qid_start, qid_end]); kind OTHER (3 items) goes to LineParser whole.
 * Our own notices are followed to their delivery in Python (logs/deliveries.py): cleanup's
 * Message-ID of a notice (<rollout.…>) and qmgr's "status=expired" go to Python as OTHER.
 *
 * Where its rules come from. The programs and line shapes (Postfix daemons and their message
 * shapes, Dovecot's login and session-end shapes, Courier/UW/Cyrus/Exim/nginx/perdition program
 * names, a Cyrus login under a site's own "prefix/service" name) are those of rollout/logs/rules.py: BlockParser hands them in as
 * rules(classifier_rules()) when a scan starts, and the Python parsers build their patterns from
 * the same tables. What is written here is only how to read a line fast: the envelope (RFC 3164
 * and RFC 3339 with a host, as envelope.py), the queue ID's shape, key=value fields. When in doubt
 * a line goes to Python, which stays the reference: tests/test_linescan.py checks both paths give
 * the same events and findings, tests/test_log_rules.py that nothing in the tables is skipped here.
 *
 * Changing a rule: edit rules.py (and the Python parser), never only this file; after editing this
 * file rebuild it with `pip install -e .` (docs/development.md, "Adding a log rule").
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <stdlib.h>
#include <stdint.h>
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
static int is_vowel(char c)
{
    c |= 0x20;
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}
static int is_long_qid(char c) { return is_alnum(c) && !is_vowel(c); }

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

/* envelope.SOLARIS_TAG: Solaris syslogd's "[ID 197553 mail.info] " before the message; returns where the message starts */
static const char *solaris_tag(const char *m, const char *e)
{
    if (!starts(m, e, "[ID ")) return m;
    const char *q = m + 4, *d = q;
    while (q < e && is_digit(*q)) q++;
    if (q == d || q >= e || *q != ' ') return m;
    const char *f = ++q;
    while (q < e && (is_lower(*q) || is_digit(*q))) q++;
    if (q == f || q >= e || *q != '.') return m;
    const char *v = ++q;
    while (q < e && is_lower(*q)) q++;
    if (q == v || !starts(q, e, "] ")) return m;
    return q + 2;
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
    l->msg = solaris_tag(q + 2, e);
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

/* the first occurrence of lit in [p, e), or NULL */
static const char *find(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    for (; p != NULL && e - p >= (long)n; p++) {
        p = memchr(p, lit[0], e - p - n + 1);
        if (p == NULL) return NULL;
        if (memcmp(p, lit, n) == 0) return p;
    }
    return NULL;
}

static int is_word(const char *p, const char *e, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(e - p) == n && memcmp(p, word, n) == 0;
}

/* -- the rules: rollout/logs/rules.py's tables, handed in as rules(classifier_rules()) ---------- */

#define MAX_WORDS 32

typedef struct {
    const char *s;
    Py_ssize_t n;
    PyObject *text, *lower; /* the word as a str, and lower-cased (a service is an event's proto) */
    const char *ls;         /* lower as UTF-8 */
    Py_ssize_t ln;
} Word;

typedef struct {
    Word w[MAX_WORDS];
    int n;
} Words;

typedef struct {
    PyObject *source; /* the dict the words point into, kept alive */
    Word postfix, dovecot, smtpd, qmgr, pickup, warning, queued_as, dovecot_info, qmgr_removed, queue_active, delivery_to, cyrus_login,
        qmgr_expired, cleanup, notice_id;
    Words programs, program_prefixes, daemons, remote_daemons, local_daemons, smtpd_session, sender_fields, login_services, login_verbs,
        end_services, end_verbs;
} Rules;

static const char RULES_CAPSULE[] = "rollout.logs._linescan.rules";

static int is_(const char *p, const char *e, const Word *w) { return e - p == w->n && memcmp(p, w->s, w->n) == 0; }
static int starts_(const char *p, const char *e, const Word *w) { return e - p >= w->n && memcmp(p, w->s, w->n) == 0; }

/* the word of ws that [p, e) is, or NULL */
static const Word *one_of(const char *p, const char *e, const Words *ws)
{
    for (int i = 0; i < ws->n; i++)
        if (is_(p, e, &ws->w[i])) return &ws->w[i];
    return NULL;
}

/* the word of ws that [p, e) starts with, or NULL */
static const Word *prefix_of(const char *p, const char *e, const Words *ws)
{
    for (int i = 0; i < ws->n; i++)
        if (starts_(p, e, &ws->w[i])) return &ws->w[i];
    return NULL;
}

/* a word of ws followed by the literal after, at *p: *p moves past both (a regex's "(?:a|b)after") */
static const Word *head(const char **p, const char *e, const Words *ws, const char *after)
{
    size_t n = strlen(after);
    for (int i = 0; i < ws->n; i++) {
        const Word *w = &ws->w[i];
        if (starts_(*p, e, w) && (size_t)(e - *p - w->n) >= n && memcmp(*p + w->n, after, n) == 0) {
            *p += w->n + n;
            return w;
        }
    }
    return NULL;
}

static void skip_(const char **p, const char *e, const Word *w)
{
    if (starts_(*p, e, w)) *p += w->n;
}

static void free_rules(PyObject *capsule)
{
    Rules *r = PyCapsule_GetPointer(capsule, RULES_CAPSULE);
    if (r == NULL) return;
    Words *lists[] = {&r->programs, &r->program_prefixes, &r->daemons, &r->remote_daemons, &r->local_daemons, &r->smtpd_session,
                      &r->sender_fields, &r->login_services, &r->login_verbs, &r->end_services, &r->end_verbs};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (int j = 0; j < lists[i]->n; j++) Py_XDECREF(lists[i]->w[j].lower);
    Py_XDECREF(r->source);
    free(r);
}

static int word_of(PyObject *str, Word *w)
{
    if (!PyUnicode_Check(str)) {
        PyErr_SetString(PyExc_TypeError, "rules: words are str");
        return -1;
    }
    w->s = PyUnicode_AsUTF8AndSize(str, &w->n);
    if (w->s == NULL) return -1;
    w->text = str;
    w->lower = PyObject_CallMethod(str, "lower", NULL);
    if (w->lower == NULL) return -1;
    w->ls = PyUnicode_AsUTF8AndSize(w->lower, &w->ln);
    return w->ls == NULL ? -1 : 0;
}

static int rule(PyObject *dict, const char *key, Word *w)
{
    PyObject *value = PyDict_GetItemString(dict, key); /* borrowed; the dict is kept */
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "rules: %s missing", key);
        return -1;
    }
    int status = word_of(value, w);
    Py_XDECREF(w->lower); /* a single word needs no lower-cased copy */
    w->lower = NULL;
    return status;
}

static int rule_list(PyObject *dict, const char *key, Words *ws)
{
    PyObject *value = PyDict_GetItemString(dict, key);
    if (value == NULL || !PyTuple_Check(value) || PyTuple_GET_SIZE(value) > MAX_WORDS) {
        PyErr_Format(PyExc_ValueError, "rules: %s must be a tuple of at most %d str", key, MAX_WORDS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(value); i++) {
        if (word_of(PyTuple_GET_ITEM(value, i), &ws->w[i]) < 0) return -1;
        ws->n = (int)i + 1;
    }
    return 0;
}

/* rules(classifier_rules()) -> the tables as this module reads them (a capsule for scan) */
static PyObject *rules(PyObject *self, PyObject *dict)
{
    (void)self;
    if (!PyDict_Check(dict)) {
        PyErr_SetString(PyExc_TypeError, "rules: a dict (rollout.logs.rules.classifier_rules())");
        return NULL;
    }
    Rules *r = calloc(1, sizeof(Rules));
    if (r == NULL) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(r, RULES_CAPSULE, free_rules);
    if (capsule == NULL) {
        free(r);
        return NULL;
    }
    r->source = Py_NewRef(dict);
    struct { const char *key; Word *w; } words[] = {
        {"postfix", &r->postfix}, {"dovecot", &r->dovecot}, {"smtpd", &r->smtpd}, {"qmgr", &r->qmgr}, {"pickup", &r->pickup},
        {"warning", &r->warning}, {"queued_as", &r->queued_as}, {"dovecot_info", &r->dovecot_info},
        {"qmgr_removed", &r->qmgr_removed}, {"queue_active", &r->queue_active}, {"delivery_to", &r->delivery_to},
        {"cyrus_login", &r->cyrus_login}, {"qmgr_expired", &r->qmgr_expired}, {"cleanup", &r->cleanup}, {"notice_id", &r->notice_id}};
    struct { const char *key; Words *ws; } lists[] = {
        {"programs", &r->programs}, {"program_prefixes", &r->program_prefixes}, {"daemons", &r->daemons},
        {"remote_daemons", &r->remote_daemons}, {"local_daemons", &r->local_daemons}, {"smtpd_session", &r->smtpd_session},
        {"sender_fields", &r->sender_fields}, {"login_services", &r->login_services}, {"login_verbs", &r->login_verbs},
        {"end_services", &r->end_services}, {"end_verbs", &r->end_verbs}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (rule(dict, words[i].key, words[i].w) < 0) goto fail;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (rule_list(dict, lists[i].key, lists[i].ws) < 0) goto fail;
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

/* -- classifying ----------------------------------------------------------------------------- */

static int smtpd(const Rules *R, const char *m, const char *e, Line *l)
{
    if (starts_(m, e, &R->warning)) return K_SMTPD;
    if (prefix_of(m, e, &R->smtpd_session)) return K_SKIP;
    const char *q = m;
    while (q < e && is_alnum(*q)) q++;
    if (q - m < 6 || e - q < 2 || q[0] != ':' || q[1] != ' ') return K_SKIP; /* not "NOQUEUE: " or "QID: ": no event */
    if (starts(q + 2, e, "client=") && q - m <= 31 && queue_id(m, e, l)) return K_ACCEPT;
    return K_SMTPD;
}

static int postfix(const Rules *R, const char *daemon, const char *daemon_end, const char *m, const char *e, Line *l)
{
    if (is_(daemon, daemon_end, &R->smtpd)) return smtpd(R, m, e, l);
    if (is_(daemon, daemon_end, &R->qmgr)) {
        if (!queue_id(m, e, l)) return K_SKIP;
        const char *r = l->qid_end + 2;
        if (is_(r, e, &R->qmgr_removed)) return K_REMOVED;
        if (find(r, e, R->qmgr_expired.s) != NULL) return K_OTHER; /* a notice given up: logs/deliveries.py */
        if (!starts(r, e, "from=<") || e - r < R->queue_active.n || memcmp(e - R->queue_active.n, R->queue_active.s, R->queue_active.n) != 0)
            return K_SKIP;
        const char *gt = memchr(r + 6, '>', e - r - 6);
        if (gt == NULL || !starts(gt, e, ">, ")) return K_SKIP;
        gt += 3;
        return head(&gt, e, &R->sender_fields, "=") ? K_SENDER : K_SKIP;
    }
    if (one_of(daemon, daemon_end, &R->remote_daemons)) {
        if (!queue_id(m, e, l) || !starts_(l->qid_end + 2, e, &R->delivery_to)) return K_SKIP;
        return K_DELIVERY;
    }
    if (is_(daemon, daemon_end, &R->pickup)) return K_OTHER;
    if (is_(daemon, daemon_end, &R->cleanup)) /* our own notices, followed to their delivery: logs/deliveries.py */
        return find(m, e, R->notice_id.s) != NULL ? K_OTHER : K_SKIP;
    if (one_of(daemon, daemon_end, &R->local_daemons)) /* local deliveries matter only as a content-filter hop */
        return find(m, e, R->queued_as.s) != NULL ? K_OTHER : K_SKIP;
    return K_SKIP;
}

static int dovecot(const Rules *R, const char *m, const char *e)
{
    skip_(&m, e, &R->dovecot_info);
    if (head(&m, e, &R->login_services, "-login: ")) {
        skip_(&m, e, &R->dovecot_info);
        return head(&m, e, &R->login_verbs, ": ") ? K_LOGIN : K_SKIP;
    }
    return head(&m, e, &R->end_services, "(") ? K_DOVECOT : K_SKIP;
}

/* Exim, Courier, Cyrus, UW, nginx, perdition: programs the line parser knows besides Postfix and Dovecot */
static int other_known(const Rules *R, const char *p, const char *e)
{
    if (one_of(p, e, &R->programs) || prefix_of(p, e, &R->program_prefixes)) return 1;
    const char *last = p;
    for (const char *q = p; q < e; q++)
        if (*q == '/') last = q + 1;
    return one_of(last, e, &R->daemons) != NULL; /* Cyrus: "cyrus/imaps" */
}

/* imapd.parse_other_imapd: a Cyrus login under a site's own service name ("prefix/imapmail"), known by its message */
static int cyrus_login(const Rules *R, const char *prog, const char *prog_end, const char *m, const char *e)
{
    return memchr(prog, '/', prog_end - prog) != NULL && starts_(m, e, &R->cyrus_login);
}

static int classify(const Rules *R, const char *p, const char *e, Line *l)
{
    if (p == e || !envelope(p, e, l)) return K_OTHER;
    const char *prog = l->prog, *prog_end = l->prog_end;
    if (starts_(prog, prog_end, &R->postfix)) {
        const char *slash = NULL;
        for (const char *q = prog; q < prog_end; q++)
            if (*q == '/') slash = q;
        if (slash == NULL) return K_OTHER;
        return postfix(R, slash + 1, prog_end, l->msg, e, l);
    }
    if (is_(prog, prog_end, &R->dovecot)) return dovecot(R, l->msg, e);
    return other_known(R, prog, prog_end) || cyrus_login(R, prog, prog_end, l->msg, e) ? K_OTHER : K_SKIP;
}

/* -- events: the common shapes become event objects here ---------------------------------------
 *
 * Most of what is left after skipping is a handful of shapes: POP3/IMAP logins and session
 * ends, relay refusals, and the four lines of a submitted message. For those, the fields
 * are read here with exactly the rules of the Python parsers (imapd.py, postfix.py), and
 * only when the line is plainly of that shape (ASCII, a dotted-quad address, no unusual
 * element); anything else stays a row for Python. A message whose lines all lie in the
 * block becomes one CompleteMessage, and a login whose session ends in the block carries
 * its end, as detection.join_complete would make them. An authenticated message whole in
 * the block is only counted, as the detector would count it (it needs no judging).
 */

typedef struct {
    const char *s, *e; /* s == NULL: absent (None) */
} Span;

enum { E_NONE, E_LOGIN, E_END, E_ACCEPT, E_SENDER, E_DELIVERY, E_REMOVED, E_REFUSAL, E_KINDS };
/* the classes scan is handed, after the events': CompleteMessage, LoginRun, LoginRecord */
enum { C_MESSAGE = E_KINDS, C_RUN, C_RECORD, N_CLASSES };
enum { OUT_ROW, OUT_EVENT, OUT_DROP, OUT_NONE, OUT_MESSAGE };

typedef struct {
    int kind, event, flag; /* flag: Accept authenticated; Refusal deferred (4xx) */
    const Word *service;   /* a login's or session end's */
    int family;            /* of addr, the client address of a login, acceptance or refusal: 4 or 6 */
    unsigned char addr[16];
    const char *start, *end;
    Line l;
    Span f[5];
    double t;
    Py_ssize_t next, ended; /* next row of the same message; a login's session end (-1: none) */
    Py_ssize_t head;        /* a removal that completes a message: the message's first row */
    int out;
} Row;

static int is_word_char(char c) { return is_alnum(c) || c == '_'; }

static int same(Span a, const char *lit) { return a.s != NULL && is_word(a.s, a.e, lit); }

static int ascii(const char *p, const char *e)
{
    uint64_t high = 0, word;
    for (; e - p >= 8; p += 8) {
        memcpy(&word, p, 8);
        high |= word;
    }
    for (; p < e; p++) high |= (unsigned char)*p;
    return (high & 0x8080808080808080ULL) == 0;
}

/* net.DOTTED_QUAD: four decimal octets, no leading zeros; the address into out[4] */
static int dotted_quad(Span s, unsigned char *out)
{
    const char *p = s.s, *e = s.e;
    if (p == NULL) return 0;
    for (int i = 0; i < 4; i++) {
        const char *d = p;
        int v = 0;
        while (p < e && is_digit(*p) && p - d < 3) v = v * 10 + (*p++ - '0');
        if (p == d || v > 255 || (p - d > 1 && *d == '0')) return 0;
        out[i] = (unsigned char)v;
        if (i < 3) {
            if (p >= e || *p != '.') return 0;
            p++;
        }
    }
    return p == e;
}

/* RFC 5952 text of an IPv6 address, as Python's ipaddress writes it: lower-case hex without
   leading zeros, the longest run (the first of equals) of two or more zero groups as "::" */
static size_t ipv6_text(const unsigned char *a, char *out)
{
    int groups[8], best = -1, best_len = 1;
    for (int i = 0; i < 8; i++) groups[i] = a[2 * i] << 8 | a[2 * i + 1];
    for (int i = 0; i < 8;) {
        int j = i;
        while (j < 8 && groups[j] == 0) j++;
        if (j - i > best_len) best = i, best_len = j - i;
        i = j > i ? j : i + 1;
    }
    char *o = out;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            *o++ = ':';
            if (i == 0) *o++ = ':';
            i += best_len - 1;
            continue;
        }
        o += sprintf(o, "%x", groups[i]);
        if (i < 7) *o++ = ':';
    }
    *o = '\0';
    return o - out;
}

/* net.normalise_ip for what the C reads: a dotted quad, or an IPv6 address written as Python would
   write it (not IPv4-mapped, which Python turns into the dotted quad); r->addr and r->family set.
   0 for anything else: the line goes to Python. */
static int client_address(Row *r, Span s)
{
    if (dotted_quad(s, r->addr)) {
        r->family = 4;
        return 1;
    }
    char text[48], canonical[48];
    size_t n = s.s ? (size_t)(s.e - s.s) : 0;
    if (n < 2 || n >= sizeof text || memchr(s.s, ':', n) == NULL) return 0;
    memcpy(text, s.s, n);
    text[n] = '\0';
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (inet_pton(AF_INET6, text, r->addr) != 1 || memcmp(r->addr, mapped, 12) == 0) return 0;
    if (ipv6_text(r->addr, canonical) != n || memcmp(canonical, text, n) != 0) return 0;
    r->family = 6;
    return 1;
}

/* imapd.DOVECOT_LOGIN and its elements, (\w+)=(<[^>]*>|[^,]*), when they come as plain
   "key=value" or "flag" items separated by ", " */
static int login_event(const Rules *R, Row *r)
{
    const char *m = r->l.msg, *e = r->end;
    skip_(&m, e, &R->dovecot_info);
    const char *service = m;
    r->service = head(&m, e, &R->login_services, "-login: ");
    if (r->service == NULL) return 0;
    Span proto = {service, service + r->service->n}, user = {0}, rip = {0}, session = {0}, mpid = {0};
    skip_(&m, e, &R->dovecot_info);
    if (!head(&m, e, &R->login_verbs, ": ")) return 0;
    for (const char *p = m; p < e;) {
        const char *k = p;
        while (p < e && is_word_char(*p)) p++;
        if (p > k && p < e && *p == '=') {
            Span key = {k, p}, value;
            p++;
            if (p < e && *p == '<') {
                const char *gt = memchr(p, '>', e - p);
                if (gt == NULL) return 0;
                value = (Span){p + 1, gt};
                p = gt + 1;
            } else {
                value.s = p;
                while (p < e && *p != ',') p++;
                value.e = p;
            }
            if (same(key, "user")) user = value;
            else if (same(key, "rip")) rip = value;
            else if (same(key, "session")) session = value;
            else if (same(key, "mpid")) mpid = value;
        } else {
            for (p = k; p < e && *p != ','; p++)
                if (*p == '=') return 0; /* findall would find a key inside it */
        }
        if (p < e && (*p != ',' || p + 1 >= e || p[1] != ' ')) return 0;
        if (p < e) p += 2;
    }
    if (user.s == NULL || user.s == user.e || !client_address(r, rip)) return 0;
    if (session.s == session.e) session.s = NULL; /* el.get("session") or None */
    r->f[0] = proto, r->f[1] = user, r->f[2] = rip, r->f[3] = session, r->f[4] = mpid;
    return E_LOGIN;
}

/* imapd.DOVECOT_END, without its "session=" variant */
static int end_event(const Rules *R, Row *r)
{
    const char *m = r->l.msg, *e = r->end;
    skip_(&m, e, &R->dovecot_info);
    const char *service = m;
    r->service = head(&m, e, &R->end_services, "(");
    if (r->service == NULL) return 0;
    Span proto = {service, service + r->service->n}, user, pid = {0}, session = {0};
    user.s = m;
    while (m < e && *m != ')') m++;
    if (m >= e) return 0;
    user.e = m++;
    if (m < e && *m == '<') {
        const char *d = m + 1;
        while (d < e && is_digit(*d)) d++;
        if (d > m + 1 && d < e && *d == '>') pid = (Span){m + 1, d}, m = d + 1;
    }
    if (m < e && *m == '<') {
        const char *gt = memchr(m, '>', e - m);
        if (gt == NULL) return 0;
        session = (Span){m + 1, gt};
        m = gt + 1;
    }
    if (!starts(m, e, ": ")) return 0;
    m += 2;
    skip_(&m, e, &R->dovecot_info);
    if (!prefix_of(m, e, &R->end_verbs)) return 0;
    if (session.s == session.e) session.s = NULL; /* e["session"] or e["session2"] */
    r->f[0] = proto, r->f[1] = user, r->f[2] = session, r->f[3] = pid;
    return E_END;
}

/* the address of "host[ip]" (net.client_ip: the last '[' and ']') */
static Span bracketed(const char *p, const char *e)
{
    const char *open = NULL, *close = NULL;
    for (const char *q = p; q < e; q++) {
        if (*q == '[') open = q;
        else if (*q == ']') close = q;
    }
    if (open == NULL || close == NULL || close < open) return (Span){0};
    return (Span){open + 1, close};
}

/* postfix.REFUSAL for "NOQUEUE: reject: RCPT from host[ip]: NNN ...: Relay access denied" */
static int refusal_event(Row *r)
{
    const char *m = r->l.msg, *e = r->end;
    static const char head[] = "NOQUEUE: reject: RCPT from ";
    if (!starts(m, e, head)) return 0;
    const char *client = m + sizeof head - 1, *q = client;
    while (q < e && is_plain(*q) && !(q[0] == ':' && q + 1 < e && q[1] == ' ')) q++;
    if (q == client || q + 1 >= e || q[0] != ':' || q[1] != ' ') return 0;
    Span ip = bracketed(client, q);
    if (!client_address(r, ip)) return 0;
    const char *text = q + 2, *tail = NULL;
    for (const char *s = text; (s = find(s, e, "; from=<")) != NULL; s++) tail = s; /* .* is greedy */
    if (tail == NULL) return 0;
    Span from, to;
    const char *p = tail + 8;
    from.s = p;
    while (p < e && *p != '>') p++;
    from.e = p;
    if (!starts(p, e, "> to=<")) return 0;
    to.s = p += 6;
    while (p < e && *p != '>') p++;
    to.e = p;
    if (!starts(p, e, "> proto=")) return 0;
    const char *v = p += 8;
    while (p < e && is_plain(*p)) p++;
    if (p == v || !starts(p, e, " helo=<")) return 0;
    p += 7;
    while (p < e && *p != '>') p++;
    if (p >= e || (p + 1 < e && p[1] != ' ')) return 0;
    static const char relay[] = ": Relay access denied";
    if (tail - text < 4 + (long)sizeof relay - 1 || !digits(text, tail, 3) || text[3] != ' ' || !ends_with(text, tail, relay)) return 0;
    if (from.s == from.e) from.s = NULL;
    if (to.s == to.e) to.s = NULL;
    r->flag = text[0] == '4';
    r->f[0] = ip, r->f[1] = from, r->f[2] = to, r->f[3] = (Span){text, tail};
    return E_REFUSAL;
}

/* postfix._accept: "client=host[ip], sasl_method=..., sasl_username=..." (items split on ", ") */
static int accept_event(Row *r)
{
    const char *p = r->l.qid_end + 2, *e = r->end;
    Span client = {0}, sasl_user = {0};
    int method = 0;
    while (p <= e) {
        const char *next = find(p, e, ", ");
        const char *item_end = next ? next : e;
        const char *eq = memchr(p, '=', item_end - p);
        if (eq != NULL) {
            Span key = {p, eq}, value = {eq + 1, item_end};
            if (same(key, "client")) client = value;
            else if (same(key, "sasl_username")) sasl_user = value;
            else if (same(key, "sasl_method")) method = 1;
            else if (same(key, "orig_client") || same(key, "orig_queue_id")) return 0; /* after a content filter: Python */
        }
        if (next == NULL) break;
        p = next + 2;
    }
    Span ip = client.s ? bracketed(client.s, client.e) : client;
    if (!client_address(r, ip)) return 0;
    r->flag = method || sasl_user.s != NULL;
    r->f[0] = ip, r->f[1] = sasl_user;
    return E_ACCEPT;
}

static int sender_event(Row *r)
{
    const char *s = r->l.qid_end + 2 + 6;
    r->f[0] = (Span){s, memchr(s, '>', r->end - s)};
    return E_SENDER;
}

/* postfix._DELIVERY and _STATUS for smtp/lmtp; a content-filter hop ("queued as") stays Python's */
static int delivery_event(const Rules *R, Row *r)
{
    const char *p = r->l.qid_end + 2, *e = r->end;
    Span rcpt, orig = {0}, relay, status;
    if (find(p, e, R->queued_as.s) != NULL || !starts(p, e, "to=<")) return 0;
    rcpt.s = p += 4;
    while (p < e && *p != '>' && *p != ',') p++;
    rcpt.e = p;
    if (!starts(p, e, ">, ")) return 0;
    p += 3;
    if (starts(p, e, "orig_to=")) {
        if (!starts(p, e, "orig_to=<")) return 0;
        orig.s = p += 9;
        while (p < e && *p != '>' && *p != ',') p++;
        orig.e = p;
        if (!starts(p, e, ">, ")) return 0;
        p += 3;
        if (orig.s == orig.e) orig.s = NULL;
    }
    if (!starts(p, e, "relay=")) return 0;
    relay.s = p += 6;
    while (p < e && *p != ',') p++;
    relay.e = p;
    if (relay.s == relay.e || !starts(p, e, ", ")) return 0;
    const char *st = find(p + 2, e, "status=");
    if (st == NULL) return 0;
    status.s = p = st + 7;
    while (p < e && (is_lower(*p) || *p == '-')) p++;
    status.e = p;
    if (status.s == status.e) return 0;
    const char *slash = NULL;
    for (const char *q = r->l.prog; q < r->l.prog_end; q++)
        if (*q == '/') slash = q;
    r->f[0] = rcpt, r->f[1] = orig, r->f[2] = (Span){slash + 1, r->l.prog_end}, r->f[3] = relay, r->f[4] = status;
    return E_DELIVERY;
}

static int event_of(const Rules *R, Row *r)
{
    if (!ascii(r->start, r->end)) return E_NONE;
    switch (r->kind) {
    case K_LOGIN: return login_event(R, r);
    case K_DOVECOT: return end_event(R, r);
    case K_SMTPD: return refusal_event(r);
    case K_ACCEPT: return accept_event(r);
    case K_SENDER: return sender_event(r);
    case K_DELIVERY: return delivery_event(R, r);
    case K_REMOVED: return E_REMOVED;
    }
    return E_NONE;
}

/* -- messages of the block -------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t head, tail, accept, removed; /* row numbers, -1 when absent */
    int accepts, removals, keep, dropped;
} Message;

typedef struct {
    int family; /* 4 or 6 */
    unsigned char net[16];
    int prefix;
} Network;

typedef struct {
    const Network *nets;
    Py_ssize_t n;
} Trusted;

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

static int is_trusted(const unsigned char *addr, int family, Trusted trusted)
{
    for (Py_ssize_t i = 0; i < trusted.n; i++)
        if (in_network(addr, family, &trusted.nets[i])) return 1;
    return 0;
}

/* A plain "client=host[ip]" (no SASL or orig_client fields) from an untrusted, parseable address? */
static int plain_untrusted(const Row *r, Trusted trusted)
{
    const char *rest = r->l.qid_end + 2 + 7, *e = r->end;
    for (const char *q = rest; q + 1 < e; q++)
        if (q[0] == ',' && q[1] == ' ') return 0; /* more fields: let Python read them */
    Span ip = bracketed(rest, e);
    if (ip.s == NULL || ip.e - ip.s >= 64) return 0;
    char text[64];
    memcpy(text, ip.s, ip.e - ip.s);
    text[ip.e - ip.s] = '\0';
    unsigned char addr[16];
    int family;
    if (inet_pton(AF_INET, text, addr) == 1) {
        family = 4;
    } else if (inet_pton(AF_INET6, text, addr) == 1) {
        family = 6;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) {
            memmove(addr, addr + 12, 4);
            family = 4;
        }
    } else {
        return 0;
    }
    return !is_trusted(addr, family, trusted);
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

static size_t hash_bytes(size_t h, const char *p, const char *e)
{
    for (; p < e; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static int is_message_row(const Row *r)
{
    return r->l.qid != NULL && (r->kind == K_ACCEPT || r->kind == K_SENDER || r->kind == K_REMOVED || r->kind == K_DELIVERY
                                || r->kind == K_OTHER);
}

static size_t table_size(Py_ssize_t n)
{
    size_t size = 64;
    while (size < (size_t)n * 2) size <<= 1;
    return size;
}

/* Group the message rows by (host, instance, queue ID), in order; drop complete, plain inbound
   messages without remote deliveries (they can never matter). The table is returned for joining. */
static Message *group_messages(Row *rows, Py_ssize_t n, Trusted trusted, size_t *size_out)
{
    size_t size = table_size(n);
    Message *table = calloc(size, sizeof(Message));
    if (table == NULL) return NULL;
    for (size_t s = 0; s < size; s++) table[s].head = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Row *r = &rows[i];
        r->next = r->ended = -1;
        if (!is_message_row(r)) continue;
        size_t s = hash_bytes(1469598103934665603ULL, r->l.qid, r->l.qid_end) & (size - 1); /* same_key compares the rest */
        while (table[s].head >= 0 && !same_key(&rows[table[s].head], r)) s = (s + 1) & (size - 1);
        Message *m = &table[s];
        if (m->head < 0) {
            m->head = i;
            m->accept = m->removed = -1;
        } else {
            rows[m->tail].next = i;
        }
        m->tail = i;
        switch (r->kind) {
        case K_ACCEPT:
            m->accepts++;
            m->accept = i;
            if (!plain_untrusted(r, trusted)) m->keep = 1;
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
    for (size_t s = 0; s < size; s++) {
        Message *m = &table[s];
        /* a line before the accept (a qmgr line logged ahead of smtpd's client=) has opened the message in the
           detector, and one after the removal reuses the queue ID: the detector must see all of them */
        if (m->head < 0 || m->keep || m->accepts != 1 || m->removals != 1 || m->head != m->accept || m->tail != m->removed)
            continue;
        m->dropped = 1;
        for (Py_ssize_t i = m->accept; i >= 0; i = rows[i].next) rows[i].out = OUT_DROP;
    }
    *size_out = size;
    return table;
}

/* join_complete: a message wholly in the block, every line an event here, from an untrusted address */
static void join_messages(Row *rows, Message *table, size_t size, Trusted trusted)
{
    for (size_t s = 0; s < size; s++) {
        Message *m = &table[s];
        if (m->head < 0 || m->dropped || m->accepts != 1 || m->removals != 1 || m->head != m->accept || m->tail != m->removed) continue;
        int whole = 1;
        for (Py_ssize_t i = m->head; i >= 0 && whole; i = rows[i].next) whole = rows[i].event != E_NONE;
        const Row *accept = &rows[m->accept];
        if (!whole || is_trusted(accept->addr, accept->family, trusted)) continue; /* whole: the accept's address was read */
        for (Py_ssize_t i = m->head; i >= 0; i = rows[i].next) rows[i].out = OUT_NONE;
        rows[m->removed].out = OUT_MESSAGE;
        rows[m->removed].head = m->head;
    }
}

/* -- sessions: a login and its end in the same block (detection._pair_sessions) --------------- */

typedef struct {
    char *key;
    size_t len;
    Py_ssize_t row; /* -1: closed */
} Session;

/* detection._session_key, as bytes; 0 when there is none. proto: the event's (a login's service as
   logged, a session end's lower-cased) */
static size_t session_key(char *out, Span host, Span proto, Span session, Span user, Span pid)
{
    char *o = out;
#define PUT(p, e) (memcpy(o, (p), (e) - (p)), o += (e) - (p))
    if (session.s != NULL) {
        PUT(host.s, host.e);
        PUT("|s|", "|s|" + 3);
    } else if (pid.s != NULL && pid.s != pid.e) {
        PUT(host.s, host.e);
        *o++ = '|';
        PUT(proto.s, proto.e);
        *o++ = '|';
        for (const char *q = user.s; q < user.e; q++) *o++ = (char)(is_upper(*q) ? *q | 0x20 : *q);
        *o++ = '|';
        PUT(pid.s, pid.e);
        return o - out;
    } else {
        return 0;
    }
    PUT(session.s, session.e);
    return o - out;
#undef PUT
}

/* a row Python reads that might be a login or a session end */
static int may_be_session(const Row *r)
{
    if (r->out != OUT_ROW || r->event != E_NONE) return 0;
    if (r->kind == K_LOGIN) return 1;
    if (r->kind == K_DOVECOT) return find(r->l.msg, r->end, "Disconnected") || find(r->l.msg, r->end, "Logged out");
    return r->kind == K_OTHER && (r->l.msg == NULL || !starts(r->l.prog, r->l.prog_end, "postfix"));
}

/* 1 when every login and session end of the block was an event here and those that pair are paired (Python's
   join_complete would pair no more), 0 when Python reads one of them (it pairs them all), -1 out of memory */
static int pair_sessions(Row *rows, Py_ssize_t n, Trusted trusted)
{
    Py_ssize_t count = 0, longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (may_be_session(&rows[i])) return 0; /* Python reads it: Python pairs them all (join_complete) */
        count += rows[i].event == E_LOGIN;
        if (rows[i].end - rows[i].start > longest) longest = rows[i].end - rows[i].start;
    }
    if (count == 0) return 1;
    size_t size = table_size(count);
    Session *table = calloc(size, sizeof(Session));
    char *key = malloc(longest + 16);
    if (table == NULL || key == NULL) {
        free(table);
        free(key);
        return -1;
    }
    int status = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Row *r = &rows[i];
        Span host = {r->l.host, r->l.host_end}, none = {0};
        size_t len;
        if (r->event == E_LOGIN) {
            if (is_trusted(r->addr, r->family, trusted)) continue;
            Span proto = {r->service->s, r->service->s + r->service->n};
            len = session_key(key, host, proto, r->f[3], r->f[1], r->f[4]);
        } else if (r->event == E_END) {
            Span proto = {r->service->ls, r->service->ls + r->service->ln};
            len = session_key(key, host, proto, r->f[2], r->f[1], none);
            if (len == 0) len = session_key(key, host, proto, none, r->f[1], r->f[3]);
        } else {
            continue;
        }
        if (len == 0) continue;
        size_t s = hash_bytes(1469598103934665603ULL, key, key + len) & (size - 1);
        while (table[s].key != NULL && !(table[s].len == len && memcmp(table[s].key, key, len) == 0)) s = (s + 1) & (size - 1);
        Session *entry = &table[s];
        if (r->event == E_LOGIN) {
            if (entry->key == NULL) {
                entry->key = malloc(len);
                if (entry->key == NULL) {
                    status = -1;
                    break;
                }
                memcpy(entry->key, key, len);
                entry->len = len;
            }
            entry->row = i;
        } else if (entry->key != NULL && entry->row >= 0) {
            rows[entry->row].ended = i;
            r->out = OUT_NONE;
            entry->row = -1;
        }
    }
    for (size_t s = 0; s < size; s++) free(table[s].key);
    free(table);
    free(key);
    return status < 0 ? -1 : 1;
}

/* -- to Python ------------------------------------------------------------------------------- */

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

/* An event class's slots in field order: its objects are filled in directly, without running the
   dataclass __init__ (which cost as much as everything else of building an event). type == NULL:
   not a plain slots dataclass, so the class is called instead. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t n, offsets[16];
} Layout;

static void layout_of(PyObject *cls, Layout *layout)
{
    layout->type = NULL;
    PyObject *fields = PyObject_GetAttrString(cls, "__dataclass_fields__"), *name;
    Py_ssize_t pos = 0, n = 0;
    if (fields == NULL || !PyDict_Check(fields) || PyDict_GET_SIZE(fields) > 16) goto done;
    while (PyDict_Next(fields, &pos, &name, NULL)) {
        PyObject *descr = PyObject_GetAttr(cls, name);
        int plain = descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)
                    && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (plain) layout->offsets[n++] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_XDECREF(descr);
        if (!plain) goto done;
    }
    layout->n = n;
    layout->type = (PyTypeObject *)cls;
done:
    Py_XDECREF(fields);
    PyErr_Clear();
}

/* What building the events of one block needs; strings that repeat (host, instance) are reused. */
typedef struct {
    const char *base;
    Py_ssize_t offset; /* of base in the file */
    PyObject *file, *classes[N_CLASSES]; /* [E_LOGIN .. E_REFUSAL], then C_MESSAGE, C_RUN, C_RECORD */
    Layout layouts[N_CLASSES];
    const char *host, *instance;
    Py_ssize_t host_len, instance_len;
    PyObject *host_str, *instance_str;
} Builder;

static PyObject *reject, *defer, *relay_reason, *k_t, *k_ip, *k_auth, *k_sasl_user, *k_sender, *k_rcpts, *k_lines,
    *k_orig_ip, *k_orig_qid;

/* a str of ASCII bytes (every row that becomes an event passed ascii()): no UTF-8 decoding */
static PyObject *ascii_str(const char *p, Py_ssize_t n)
{
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL) memcpy(PyUnicode_1BYTE_DATA(out), p, n);
    return out;
}

static PyObject *text(Span s)
{
    if (s.s == NULL) Py_RETURN_NONE;
    return ascii_str(s.s, s.e - s.s);
}

static PyObject *reused(const char *p, Py_ssize_t n, const char **last, Py_ssize_t *last_len, PyObject **obj)
{
    if (*obj == NULL || *last_len != n || memcmp(*last, p, n) != 0) {
        PyObject *fresh = ascii_str(p, n);
        if (fresh == NULL) return NULL;
        Py_XSETREF(*obj, fresh);
        *last = p, *last_len = n;
    }
    Py_INCREF(*obj);
    return *obj;
}

static PyObject *host_of(Builder *b, const Row *r)
{
    return reused(r->l.host, r->l.host_end - r->l.host, &b->host, &b->host_len, &b->host_str);
}

static PyObject *instance_of(Builder *b, const Row *r)
{
    return reused(r->l.prog, instance_end(&r->l) - r->l.prog, &b->instance, &b->instance_len, &b->instance_str);
}


/* An object of classes[cls] from its fields in order, stealing the references in args (NULL: failed). */
static PyObject *build(Builder *b, int cls, PyObject **args, Py_ssize_t n)
{
    PyObject *result = NULL;
    int complete = 1;
    for (Py_ssize_t i = 0; i < n; i++) complete &= args[i] != NULL;
    const Layout *layout = &b->layouts[cls];
    if (complete && layout->type != NULL && layout->n == n) {
        result = layout->type->tp_alloc(layout->type, 0);
        for (Py_ssize_t i = 0; result != NULL && i < layout->n; i++)
            *(PyObject **)((char *)result + layout->offsets[i]) = Py_NewRef(args[i]);
    } else if (complete) {
        result = PyObject_Vectorcall(b->classes[cls], args, n, NULL);
    }
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(args[i]);
    return result;
}

static PyObject *offset_of(Builder *b, const Row *r) { return PyLong_FromSsize_t(b->offset + (r->start - b->base)); }

/* Calls cls(t, host, file, offset, line, *rest), stealing the references in rest. */
static PyObject *event(Builder *b, const Row *r, int cls, PyObject **rest, Py_ssize_t n_rest)
{
    PyObject *args[16] = {PyFloat_FromDouble(r->t), host_of(b, r), Py_NewRef(b->file), offset_of(b, r),
                          ascii_str(r->start, r->end - r->start)};
    memcpy(args + 5, rest, n_rest * sizeof(PyObject *));
    return build(b, cls, args, 5 + n_rest);
}

/* -- Refusal: a relay refusal read here, compact -----------------------------------------------
 *
 * The same event as rollout.logs.events.Refusal (its fields, repr, and equality with it), built
 * for the relay refusals this module reads: one object holding its line, the other strings read
 * from the line when asked. A provider's log refuses relaying tens of thousands of times, nearly
 * always to addresses that never logged in, and the detector asks those only for their address.
 */

enum { R_IP, R_SENDER, R_RCPT, R_TEXT, R_SPANS };

static int append(PyObject *list, PyObject *item);

typedef struct {
    PyObject_VAR_HEAD /* ob_size: the bytes of text (the line) */
    double t;
    Py_ssize_t offset;
    PyObject *host, *file, *action, *reason;
    Py_ssize_t start[R_SPANS], len[R_SPANS]; /* in text; start -1: None */
    char text[1];
} RefusalObject;

static PyTypeObject RefusalType;

static PyObject *new_refusal(Builder *b, const Row *r)
{
    Py_ssize_t n = r->end - r->start;
    PyObject *host = host_of(b, r);
    if (host == NULL) return NULL;
    RefusalObject *e = PyObject_NewVar(RefusalObject, &RefusalType, n);
    if (e == NULL) {
        Py_DECREF(host);
        return NULL;
    }
    e->t = r->t, e->offset = b->offset + (r->start - b->base);
    e->host = host, e->file = Py_NewRef(b->file), e->action = Py_NewRef(r->flag ? defer : reject), e->reason = Py_NewRef(relay_reason);
    for (int i = 0; i < R_SPANS; i++) { /* ip, from, to, text: refusal_event's fields */
        e->start[i] = r->f[i].s ? r->f[i].s - r->start : -1;
        e->len[i] = r->f[i].s ? r->f[i].e - r->f[i].s : 0;
    }
    memcpy(e->text, r->start, n);
    return (PyObject *)e;
}

static void refusal_dealloc(RefusalObject *e)
{
    Py_DECREF(e->host);
    Py_DECREF(e->file);
    Py_DECREF(e->action);
    Py_DECREF(e->reason);
    PyObject_Free(e);
}

static PyObject *refusal_span(RefusalObject *e, int i)
{
    return e->start[i] < 0 ? Py_NewRef(Py_None) : ascii_str(e->text + e->start[i], e->len[i]);
}

static PyObject *refusal_t(RefusalObject *e, void *c) { return PyFloat_FromDouble(e->t); }
static PyObject *refusal_host(RefusalObject *e, void *c) { return Py_NewRef(e->host); }
static PyObject *refusal_file(RefusalObject *e, void *c) { return Py_NewRef(e->file); }
static PyObject *refusal_offset(RefusalObject *e, void *c) { return PyLong_FromSsize_t(e->offset); }
static PyObject *refusal_line(RefusalObject *e, void *c) { return ascii_str(e->text, Py_SIZE(e)); }
static PyObject *refusal_action(RefusalObject *e, void *c) { return Py_NewRef(e->action); }
static PyObject *refusal_reason(RefusalObject *e, void *c) { return Py_NewRef(e->reason); }
static PyObject *refusal_ip(RefusalObject *e, void *c) { return refusal_span(e, R_IP); }
static PyObject *refusal_sender(RefusalObject *e, void *c) { return refusal_span(e, R_SENDER); }
static PyObject *refusal_rcpt(RefusalObject *e, void *c) { return refusal_span(e, R_RCPT); }
static PyObject *refusal_text(RefusalObject *e, void *c) { return refusal_span(e, R_TEXT); }
static PyObject *refusal_map_address(RefusalObject *e, void *c) { return Py_NewRef(Py_None); }

static PyGetSetDef refusal_getset[] = {
    {"t", (getter)refusal_t, NULL, NULL, NULL},
    {"host", (getter)refusal_host, NULL, NULL, NULL},
    {"file", (getter)refusal_file, NULL, NULL, NULL},
    {"offset", (getter)refusal_offset, NULL, NULL, NULL},
    {"line", (getter)refusal_line, NULL, NULL, NULL},
    {"action", (getter)refusal_action, NULL, NULL, NULL},
    {"reason", (getter)refusal_reason, NULL, NULL, NULL},
    {"client_ip", (getter)refusal_ip, NULL, NULL, NULL},
    {"sender", (getter)refusal_sender, NULL, NULL, NULL},
    {"rcpt", (getter)refusal_rcpt, NULL, NULL, NULL},
    {"text", (getter)refusal_text, NULL, NULL, NULL},
    {"map_address", (getter)refusal_map_address, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static const char *const REFUSAL_FIELDS[] = {"t", "host", "file", "offset", "line", "action", "reason", "client_ip", "sender", "rcpt",
                                             "text", "map_address"};
#define N_REFUSAL_FIELDS 12

/* the fields in the dataclass's order, of this type or of any object that has them (None: it has not) */
static PyObject *refusal_fields(PyObject *o)
{
    PyObject *fields = PyTuple_New(N_REFUSAL_FIELDS);
    for (int i = 0; fields != NULL && i < N_REFUSAL_FIELDS; i++) {
        PyObject *value = PyObject_GetAttrString(o, REFUSAL_FIELDS[i]);
        if (value == NULL) {
            Py_DECREF(fields);
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        PyTuple_SET_ITEM(fields, i, value);
    }
    return fields;
}

static PyObject *refusal_repr(PyObject *e)
{
    PyObject *f = refusal_fields(e), *parts = NULL, *out = NULL;
    if (f == NULL || f == Py_None) return f;
    parts = PyList_New(0);
    for (int i = 0; parts != NULL && i < N_REFUSAL_FIELDS; i++)
        if (append(parts, PyUnicode_FromFormat("%s=%R", REFUSAL_FIELDS[i], PyTuple_GET_ITEM(f, i))) < 0) Py_CLEAR(parts);
    if (parts != NULL) {
        PyObject *sep = PyUnicode_FromString(", "), *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
        if (joined != NULL) out = PyUnicode_FromFormat("Refusal(%U)", joined);
        Py_XDECREF(sep);
        Py_XDECREF(joined);
    }
    Py_XDECREF(parts);
    Py_DECREF(f);
    return out;
}

/* equal to a Refusal of either kind (this one, or events.Refusal read by Python) with the same fields */
static PyObject *refusal_compare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || (strcmp(Py_TYPE(b)->tp_name, "Refusal") != 0 && !Py_IS_TYPE(b, &RefusalType)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *x = refusal_fields(a), *y = x ? refusal_fields(b) : NULL, *result = NULL;
    if (x == Py_None || y == Py_None) result = Py_NewRef(Py_NotImplemented);
    else if (y != NULL) result = PyObject_RichCompare(x, y, op);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

static PyTypeObject RefusalType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rollout.logs._linescan.Refusal",
    .tp_basicsize = offsetof(RefusalObject, text),
    .tp_itemsize = 1,
    .tp_dealloc = (destructor)refusal_dealloc,
    .tp_repr = refusal_repr,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "rollout.logs.events.Refusal for a relay refusal read by the classifier: its strings read from its line when asked",
    .tp_richcompare = refusal_compare,
    .tp_getset = refusal_getset,
};

static PyObject *simple_event(Builder *b, const Row *r, const Row *rows)
{
    const Span *f = r->f;
    switch (r->event) {
    case E_LOGIN: {
        PyObject *ended = r->ended >= 0 ? PyFloat_FromDouble(rows[r->ended].t) : Py_NewRef(Py_None);
        PyObject *rest[] = {Py_NewRef(r->service->text), text(f[1]), text(f[2]), text(f[3]), text(f[4]), ended};
        return event(b, r, E_LOGIN, rest, 6);
    }
    case E_END: {
        PyObject *rest[] = {Py_NewRef(r->service->lower), text(f[1]), text(f[2]), text(f[3])};
        return event(b, r, E_END, rest, 4);
    }
    case E_REFUSAL: {
        if (b->classes[E_REFUSAL] == (PyObject *)&RefusalType) return new_refusal(b, r);
        PyObject *rest[] = {Py_NewRef(r->flag ? defer : reject), Py_NewRef(relay_reason), text(f[0]), text(f[1]), text(f[2]), text(f[3]),
                            Py_NewRef(Py_None)};
        return event(b, r, E_REFUSAL, rest, 7);
    }
    }
    PyObject *key[] = {instance_of(b, r), ascii_str(r->l.qid, r->l.qid_end - r->l.qid)};
    switch (r->event) {
    case E_ACCEPT: {
        PyObject *rest[] = {key[0], key[1], text(f[0]), text(f[1]), PyBool_FromLong(r->flag), Py_NewRef(Py_None), Py_NewRef(Py_None),
                            Py_NewRef(Py_None)};
        return event(b, r, E_ACCEPT, rest, 8);
    }
    case E_SENDER: {
        PyObject *rest[] = {key[0], key[1], text(f[0])};
        return event(b, r, E_SENDER, rest, 3);
    }
    case E_DELIVERY: {
        PyObject *rest[] = {key[0], key[1], text(f[0]), text(f[1]), text(f[2]), text(f[3]), text(f[4]), Py_NewRef(Py_None)};
        return event(b, r, E_DELIVERY, rest, 8);
    }
    default: /* E_REMOVED */
        return event(b, r, E_REMOVED, key, 2);
    }
}

static int set_item(PyObject *dict, PyObject *key, PyObject *value)
{
    if (value == NULL) return -1;
    int status = PyDict_SetItem(dict, key, value);
    Py_DECREF(value);
    return status;
}

static int append(PyObject *list, PyObject *item)
{
    if (item == NULL) return -1;
    int status = PyList_Append(list, item);
    Py_DECREF(item);
    return status;
}

static PyObject *evidence(Builder *b, const Row *r)
{
    return Py_BuildValue("[On N]", b->file, b->offset + (r->start - b->base), ascii_str(r->start, r->end - r->start));
}

/* The dict Detector._accept/_sender/_delivery/_removed build, as one CompleteMessage (at its removal). */
static PyObject *complete_message(Builder *b, const Row *rows, const Row *removed, Py_ssize_t head)
{
    const Row *accept = &rows[head];
    PyObject *msg = PyDict_New(), *rcpts = PyList_New(0), *lines = PyList_New(0), *sender = Py_NewRef(Py_None);
    if (msg == NULL || rcpts == NULL || lines == NULL) goto fail;
    Py_ssize_t n_rcpts = 0;
    for (Py_ssize_t i = head; i >= 0; i = rows[i].next) {
        const Row *r = &rows[i];
        if (r->event == E_SENDER) Py_XSETREF(sender, text(r->f[0]));
        if (r->event == E_DELIVERY) {
            if (n_rcpts >= 50) continue; /* Detector._delivery keeps the first 50 */
            n_rcpts++;
            const Span *f = r->f;
            if (append(rcpts, Py_BuildValue("[NNNNNO]", text(f[0]), text(f[1]), text(f[2]), text(f[3]), text(f[4]), Py_False)) < 0) goto fail;
        }
        if (sender == NULL || append(lines, evidence(b, r)) < 0) goto fail;
    }
    if (set_item(msg, k_t, PyFloat_FromDouble(accept->t)) < 0 || set_item(msg, k_ip, text(accept->f[0])) < 0
        || set_item(msg, k_auth, PyBool_FromLong(accept->flag)) < 0 || set_item(msg, k_sasl_user, text(accept->f[1])) < 0
        || set_item(msg, k_sender, Py_NewRef(sender)) < 0 || set_item(msg, k_rcpts, Py_NewRef(rcpts)) < 0
        || set_item(msg, k_lines, Py_NewRef(lines)) < 0 || set_item(msg, k_orig_ip, Py_NewRef(Py_None)) < 0
        || set_item(msg, k_orig_qid, Py_NewRef(Py_None)) < 0)
        goto fail;
    Py_DECREF(rcpts);
    Py_DECREF(lines);
    Py_DECREF(sender);
    PyObject *rest[] = {instance_of(b, removed), ascii_str(removed->l.qid, removed->l.qid_end - removed->l.qid), msg};
    return event(b, removed, C_MESSAGE, rest, 3);
fail:
    Py_XDECREF(msg);
    Py_XDECREF(rcpts);
    Py_XDECREF(lines);
    Py_XDECREF(sender);
    return NULL;
}

/* -- LoginRecord: what the detector remembers of a login, compact ------------------------------
 *
 * rollout.logs.events.LoginRecord is this type when the module is built (the dataclass there is
 * the same record for a build without it): the same fields, constructor, repr and equality, but
 * the times and the offset are held as C numbers and an ASCII line as its bytes, so a login the
 * detector keeps is one object and its user's string instead of six objects. Every login of a
 * provider's log is made, filed and later forgotten: those objects were most of the scan's work.
 */

typedef struct {
    PyObject_VAR_HEAD /* ob_size: the bytes of text (an ASCII line held inline) */
    double t, ended;
    int has_ended; /* ended is None when 0 */
    Py_ssize_t offset;
    PyObject *user, *key, *file, *line; /* line NULL: the line is text */
    char text[1];
} Record;

static PyTypeObject RecordType;

static PyObject *new_record(double t, PyObject *user, int has_ended, double ended, PyObject *key, PyObject *file, Py_ssize_t offset,
                            const char *text, Py_ssize_t n)
{
    Record *r = PyObject_NewVar(Record, &RecordType, n);
    if (r == NULL) return NULL;
    r->t = t, r->ended = ended, r->has_ended = has_ended, r->offset = offset;
    r->user = Py_NewRef(user), r->key = Py_NewRef(key), r->file = Py_NewRef(file), r->line = NULL;
    memcpy(r->text, text, n);
    return (PyObject *)r;
}

static PyObject *record_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)type;
    static char *names[] = {"t", "user", "ended", "key", "file", "offset", "line", NULL};
    double t, ended = 0;
    PyObject *user, *ended_obj, *key, *file, *line;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "dOOOOnU:LoginRecord", names, &t, &user, &ended_obj, &key, &file, &offset, &line))
        return NULL;
    if (ended_obj != Py_None && (ended = PyFloat_AsDouble(ended_obj)) == -1.0 && PyErr_Occurred()) return NULL;
    if (PyUnicode_IS_ASCII(line))
        return new_record(t, user, ended_obj != Py_None, ended, key, file, offset, (const char *)PyUnicode_1BYTE_DATA(line),
                          PyUnicode_GET_LENGTH(line));
    Record *r = (Record *)new_record(t, user, ended_obj != Py_None, ended, key, file, offset, "", 0);
    if (r != NULL) r->line = Py_NewRef(line);
    return (PyObject *)r;
}

static void record_dealloc(Record *r)
{
    Py_DECREF(r->user);
    Py_DECREF(r->key);
    Py_DECREF(r->file);
    Py_XDECREF(r->line);
    PyObject_Free(r);
}

static PyObject *record_t(Record *r, void *closure) { return PyFloat_FromDouble(r->t); }
static PyObject *record_offset(Record *r, void *closure) { return PyLong_FromSsize_t(r->offset); }
static PyObject *record_user(Record *r, void *closure) { return Py_NewRef(r->user); }
static PyObject *record_file(Record *r, void *closure) { return Py_NewRef(r->file); }
static PyObject *record_key(Record *r, void *closure) { return Py_NewRef(r->key); }
static PyObject *record_ended(Record *r, void *closure) { return r->has_ended ? PyFloat_FromDouble(r->ended) : Py_NewRef(Py_None); }
static PyObject *record_line(Record *r, void *closure) { return r->line ? Py_NewRef(r->line) : ascii_str(r->text, Py_SIZE(r)); }

static int record_set_key(Record *r, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "key cannot be deleted");
        return -1;
    }
    Py_SETREF(r->key, Py_NewRef(value));
    return 0;
}

static int record_set_ended(Record *r, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "ended cannot be deleted");
        return -1;
    }
    if (value == Py_None) {
        r->has_ended = 0;
        return 0;
    }
    double ended = PyFloat_AsDouble(value);
    if (ended == -1.0 && PyErr_Occurred()) return -1;
    r->ended = ended, r->has_ended = 1;
    return 0;
}

static PyGetSetDef record_getset[] = {
    {"t", (getter)record_t, NULL, "the login's time (UTC seconds)", NULL},
    {"user", (getter)record_user, NULL, "the user, lower-cased", NULL},
    {"ended", (getter)record_ended, (setter)record_set_ended, "the session's end once known, or None", NULL},
    {"key", (getter)record_key, (setter)record_set_key, "the session key while the session is open, or None", NULL},
    {"file", (getter)record_file, NULL, "the log file (evidence)", NULL},
    {"offset", (getter)record_offset, NULL, "the line's byte offset in the file (evidence)", NULL},
    {"line", (getter)record_line, NULL, "the line (evidence)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *record_fields(Record *r)
{
    return Py_BuildValue("(NNNNNNN)", record_t(r, NULL), record_user(r, NULL), record_ended(r, NULL), record_key(r, NULL),
                         record_file(r, NULL), record_offset(r, NULL), record_line(r, NULL));
}

/* as the dataclass's: LoginRecord(t=..., user=..., ...) */
static PyObject *record_repr(Record *r)
{
    PyObject *f = record_fields(r);
    if (f == NULL) return NULL;
    PyObject *out = PyUnicode_FromFormat("LoginRecord(t=%R, user=%R, ended=%R, key=%R, file=%R, offset=%R, line=%R)", PyTuple_GET_ITEM(f, 0),
                                         PyTuple_GET_ITEM(f, 1), PyTuple_GET_ITEM(f, 2), PyTuple_GET_ITEM(f, 3), PyTuple_GET_ITEM(f, 4),
                                         PyTuple_GET_ITEM(f, 5), PyTuple_GET_ITEM(f, 6));
    Py_DECREF(f);
    return out;
}

/* as the dataclass's: equal when of this type and every field is */
static PyObject *record_compare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !Py_IS_TYPE(a, &RecordType) || !Py_IS_TYPE(b, &RecordType)) Py_RETURN_NOTIMPLEMENTED;
    PyObject *x = record_fields((Record *)a), *y = x ? record_fields((Record *)b) : NULL, *result = NULL;
    if (y != NULL) result = PyObject_RichCompare(x, y, op);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return result;
}

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rollout.logs._linescan.LoginRecord",
    .tp_basicsize = offsetof(Record, text),
    .tp_itemsize = 1,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_repr = (reprfunc)record_repr,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LoginRecord(t, user, ended, key, file, offset, line): what the detector remembers of a login (its window)",
    .tp_richcompare = record_compare,
    .tp_getset = record_getset,
    .tp_new = record_new,
};

/* -- runs of logins: the detector's records built here ----------------------------------------
 *
 * Most events of a provider's log are logins whose session ends in the same block. Consecutive
 * ones of one host (nothing else for Python between them but the host's relay refusals, which
 * stay in their place in the run) go out as one LoginRun holding their records, their addresses,
 * their session keys (one string, a line each, empty for none) and, when one was not lower case
 * already, the users as logged: exactly what Detector._login would file, so the detector only
 * files them. Addresses and users repeated in a block are one string.
 */

#define RUN_KEY_MAX 1024
#define CACHED 16384 /* strings remembered per block (addresses, users): more than a block of 4 MB holds */

typedef struct {
    PyObject *logins, *ips, *users; /* logins NULL: no run open; users NULL: every user lower case */
    char *keys;                     /* the session keys, "\n" after each */
    size_t keys_len, keys_cap;
    const Row *head;
    double first, last;
} Run;

typedef struct {
    size_t hash;
    PyObject *str;
} Cached;

static int in_run(const Builder *b, const Row *r)
{
    return b->classes[C_RUN] != Py_None && r->out == OUT_ROW && r->event == E_LOGIN && r->ended >= 0
           && (r->l.host_end - r->l.host) + (r->end - r->start) + 16 < RUN_KEY_MAX;
}

/* a quick hash of a short string, eight bytes at a time */
static size_t hash_words(const char *p, Py_ssize_t n)
{
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001B3ULL;
        h ^= h >> 29;
    }
    if (n > 0) {
        w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0x100000001B3ULL;
        h ^= h >> 29;
    }
    return (size_t)(h ^ (h >> 32));
}

/* the ASCII string of bytes p[0:n], the same object for the same bytes within the block (cache: CACHED slots) */
static PyObject *cached_str(Cached *cache, const char *p, Py_ssize_t n)
{
    size_t h = hash_words(p, n), s = h & (CACHED - 1);
    for (int probe = 0; probe < 8; probe++, s = (s + 1) & (CACHED - 1)) {
        Cached *c = &cache[s];
        if (c->str == NULL) {
            c->str = ascii_str(p, n);
            c->hash = h;
            return c->str ? Py_NewRef(c->str) : NULL;
        }
        if (c->hash == h && PyUnicode_GET_LENGTH(c->str) == n && memcmp(PyUnicode_1BYTE_DATA(c->str), p, n) == 0) return Py_NewRef(c->str);
    }
    return ascii_str(p, n); /* a full neighbourhood: not remembered */
}

static void free_cache(Cached *cache)
{
    for (int i = 0; cache != NULL && i < CACHED; i++) Py_XDECREF(cache[i].str);
    free(cache);
}

static int add_key(Run *run, const char *key, size_t len)
{
    if (run->keys_len + len + 1 > run->keys_cap) {
        size_t cap = run->keys_cap ? run->keys_cap * 2 : 1024;
        while (cap < run->keys_len + len + 1) cap *= 2;
        char *grown = realloc(run->keys, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        run->keys = grown, run->keys_cap = cap;
    }
    memcpy(run->keys + run->keys_len, key, len);
    run->keys_len += len;
    run->keys[run->keys_len++] = '\n';
    return 0;
}

/* the record of a login (its session ended in the block) filed in the run, with its address, key and user */
static int run_login(Builder *b, Run *run, const Row *r, const Row *rows, Cached *cache)
{
    const Span *f = r->f; /* proto, user, rip, session, mpid */
    char key[RUN_KEY_MAX], user[RUN_KEY_MAX];
    Span host = {r->l.host, r->l.host_end}, proto = {r->service->s, r->service->s + r->service->n};
    size_t key_len = session_key(key, host, proto, f[3], f[1], f[4]);
    Py_ssize_t n = f[1].e - f[1].s;
    int upper = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = f[1].s[i];
        upper |= is_upper(c);
        user[i] = is_upper(c) ? c | 0x20 : c;
    }
    PyObject *lower = cached_str(cache, user, n), *ip = cached_str(cache, f[2].s, f[2].e - f[2].s), *record = NULL;
    if (lower != NULL && b->classes[C_RECORD] == (PyObject *)&RecordType) {
        record = new_record(r->t, lower, 1, rows[r->ended].t, Py_None, b->file, b->offset + (r->start - b->base), r->start, r->end - r->start);
    } else if (lower != NULL) {
        PyObject *fields[] = {PyFloat_FromDouble(r->t), Py_NewRef(lower), PyFloat_FromDouble(rows[r->ended].t), Py_NewRef(Py_None),
                              Py_NewRef(b->file), offset_of(b, r), ascii_str(r->start, r->end - r->start)};
        record = build(b, C_RECORD, fields, 7);
    }
    Py_XDECREF(lower);
    int status = record == NULL || ip == NULL ? -1 : 0;
    if (status == 0 && upper && run->users == NULL) { /* the first user not in lower case: None for those before */
        Py_ssize_t before = PyList_GET_SIZE(run->logins);
        run->users = PyList_New(before);
        for (Py_ssize_t i = 0; run->users != NULL && i < before; i++) PyList_SET_ITEM(run->users, i, Py_NewRef(Py_None));
        status = run->users == NULL ? -1 : 0;
    }
    if (status == 0 && run->users != NULL) status = append(run->users, upper ? text(f[1]) : Py_NewRef(Py_None));
    if (status == 0) status = PyList_Append(run->logins, record);
    if (status == 0) status = PyList_Append(run->ips, ip);
    if (status == 0) status = add_key(run, key, key_len);
    Py_XDECREF(record);
    Py_XDECREF(ip);
    return status;
}

static int same_host(const Row *a, const Row *b)
{
    return a->l.host_end - a->l.host == b->l.host_end - b->l.host && memcmp(a->l.host, b->l.host, a->l.host_end - a->l.host) == 0;
}

/* the open run, if any, as one LoginRun(t = first, host, file, offset, "", last, logins, ips, keys, users) at the end of list */
static int flush_run(Builder *b, Run *run, PyObject *list)
{
    if (run->logins == NULL) return 0;
    PyObject *args[] = {PyFloat_FromDouble(run->first),
                        host_of(b, run->head),
                        Py_NewRef(b->file),
                        offset_of(b, run->head),
                        ascii_str("", 0),
                        PyFloat_FromDouble(run->last),
                        run->logins,
                        run->ips,
                        ascii_str(run->keys, run->keys_len ? run->keys_len - 1 : 0), /* without the last "\n" */
                        run->users ? run->users : Py_NewRef(Py_None)};
    run->logins = run->ips = run->users = NULL;
    run->keys_len = 0;
    return append(list, build(b, C_RUN, args, 10));
}

static int add_to_run(Builder *b, Run *run, const Row *r, const Row *rows, PyObject *list, Cached *cache)
{
    if (run->logins != NULL && !same_host(run->head, r) && flush_run(b, run, list) < 0) return -1;
    if (run->logins == NULL) {
        run->logins = PyList_New(0);
        run->ips = PyList_New(0);
        if (run->logins == NULL || run->ips == NULL) return -1;
        run->head = r;
        run->first = run->last = r->t;
    }
    if (r->t < run->first) run->first = r->t;
    if (r->t > run->last) run->last = r->t;
    return run_login(b, run, r, rows, cache);
}

/* A relay refusal of the run's host, between its logins: filed in the run in its place in time (address None, no
   key), so the run goes on; file_logins hands it to the detector in that place. */
static int in_run_refusal(const Builder *b, const Run *run, const Row *r)
{
    return run->logins != NULL && r->out == OUT_ROW && r->event == E_REFUSAL && b->classes[E_REFUSAL] == (PyObject *)&RefusalType
           && same_host(run->head, r);
}

static int add_refusal_to_run(Builder *b, Run *run, const Row *r)
{
    if (r->t < run->first) run->first = r->t;
    if (r->t > run->last) run->last = r->t;
    PyObject *refusal = new_refusal(b, r);
    int status = refusal == NULL ? -1 : PyList_Append(run->logins, refusal);
    Py_XDECREF(refusal);
    if (status == 0) status = PyList_Append(run->ips, Py_None);
    if (status == 0 && run->users != NULL) status = PyList_Append(run->users, Py_None);
    if (status == 0) status = add_key(run, "", 0);
    return status;
}

/* Python's int(t // 86400): the UTC day number of t, exactly (no libm) */
static Py_ssize_t utc_day(double t)
{
    Py_ssize_t day = (Py_ssize_t)(t / 86400.0);
    double rest = t - (double)day * 86400.0;
    if (rest < 0) day--;
    else if (rest >= 86400.0) day++;
    return day;
}

/* Detector._count_authenticated for a message joined here: the customer has switched, and all
   that is kept of it is a count per (SASL user lower-cased or None, UTC day) with the last time. */
static int count_authenticated(PyObject *counts, const Row *accept)
{
    Span user = accept->f[1];
    PyObject *name;
    if (user.s == NULL || user.s == user.e) {
        name = Py_NewRef(Py_None);
    } else { /* the line is ASCII (event_of): str.lower is A-Z to a-z */
        name = PyUnicode_New(user.e - user.s, 127);
        if (name == NULL) return -1;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(name);
        for (const char *p = user.s; p < user.e; p++) *out++ = is_upper(*p) ? *p | 0x20 : *p;
    }
    PyObject *key = Py_BuildValue("(Nn)", name, utc_day(accept->t));
    if (key == NULL) return -1;
    PyObject *entry = PyDict_GetItemWithError(counts, key); /* borrowed */
    int status = 0;
    if (entry != NULL) {
        PyObject *count = PyLong_FromSsize_t(PyLong_AsSsize_t(PyList_GET_ITEM(entry, 0)) + 1);
        status = count == NULL ? -1 : PyList_SetItem(entry, 0, count);
        if (status == 0 && accept->t > PyFloat_AS_DOUBLE(PyList_GET_ITEM(entry, 1))) {
            PyObject *last = PyFloat_FromDouble(accept->t);
            status = last == NULL ? -1 : PyList_SetItem(entry, 1, last);
        }
    } else {
        status = PyErr_Occurred() ? -1 : set_item(counts, key, Py_BuildValue("[nd]", (Py_ssize_t)1, accept->t));
    }
    Py_DECREF(key);
    return status;
}

/* Times of the event rows, by Python's EnvelopeParser.time_of. An RFC 3164 stamp costs one call
   per hour ("Mar  2 09" + ":00:00", as time_of caches it too), an RFC 3339 one a call per distinct
   stamp. An event whose stamp gives None goes back to Python, which counts the line as unknown: returns how many
   went back so (-1: an error). */
static Py_ssize_t event_times(Row *rows, Py_ssize_t n, PyObject *time_of)
{
    const char *last = NULL;
    Py_ssize_t last_len = 0;
    double t = 0;
    Py_ssize_t cleared = 0;
    int valid = 0;
    char stamp[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        Row *r = &rows[i];
        if (r->event == E_NONE) continue;
        const char *s = r->l.stamp;
        int bsd = !is_digit(*s);
        Py_ssize_t len = r->l.stamp_end - s - (bsd ? 6 : 0); /* BSD: up to the hour */
        if (last == NULL || len != last_len || memcmp(last, s, len) != 0) {
            if (len > 48) {
                valid = 0;
            } else {
                memcpy(stamp, s, len);
                if (bsd) memcpy(stamp + len, ":00:00", 6);
                PyObject *result = PyObject_CallFunction(time_of, "s#", stamp, len + (bsd ? 6 : 0));
                if (result == NULL) return -1;
                valid = result != Py_None;
                if (valid) t = PyFloat_AsDouble(result);
                Py_DECREF(result);
                if (valid && t == -1.0 && PyErr_Occurred()) return -1;
            }
            last = s, last_len = len;
        }
        int ok = valid;
        r->t = t;
        if (bsd && ok) { /* "hh:mm:ss": digits checked by bsd_stamp */
            const char *mmss = r->l.stamp_end - 5;
            int mm = (mmss[0] - '0') * 10 + mmss[1] - '0', ss = (mmss[3] - '0') * 10 + mmss[4] - '0';
            ok = mm <= 59 && ss <= 59;
            r->t = t + mm * 60 + ss;
        }
        if (!ok) r->event = E_NONE, cleared++;
    }
    return cleared;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    PyObject *rules_capsule, *trusted_list, *time_of = Py_None, *classes = Py_None, *result = NULL, *list = NULL, *counts = NULL;
    Builder b = {0};
    Run run = {0};
    Cached *cache = NULL;
    b.file = Py_None;
    Row *rows = NULL;
    Message *messages = NULL;
    size_t n_messages = 0;
    Network *nets = NULL;
    Py_ssize_t n_nets = 0, n = 0, cap = 1024, lines = 0, skipped = 0, dropped[K_SKIP] = {0}, events[E_KINDS] = {0};
    int failed = 0;
    if (!PyArg_ParseTuple(args, "y*OO|OnOO", &view, &rules_capsule, &trusted_list, &b.file, &b.offset, &time_of, &classes)) return NULL;
    const Rules *R = PyCapsule_GetPointer(rules_capsule, RULES_CAPSULE);
    if (R == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int extract = time_of != Py_None;
    if (extract && (!PyTuple_Check(classes) || PyTuple_GET_SIZE(classes) != N_CLASSES - 1)) {
        PyErr_SetString(PyExc_TypeError, "classes: (Login, SessionEnd, Accept, Sender, Delivery, Removed, Refusal, CompleteMessage, "
                                         "LoginRun or None, LoginRecord)");
        goto done;
    }
    for (int i = 0; extract && i < N_CLASSES - 1; i++) {
        b.classes[i + 1] = PyTuple_GET_ITEM(classes, i);
        if (b.classes[i + 1] != Py_None) layout_of(b.classes[i + 1], &b.layouts[i + 1]);
    }
    if (parse_networks(trusted_list, &nets, &n_nets) < 0) goto done;
    Trusted trusted = {nets, n_nets};
    const char *base = b.base = view.buf, *end = base + view.len;

    int paired = 0;
    Py_BEGIN_ALLOW_THREADS
    rows = malloc(cap * sizeof(Row));
    for (const char *p = base; p < end && rows != NULL;) {
        const char *nl = memchr(p, '\n', end - p);
        const char *e = nl ? nl : end;
        Row r; /* not {0}: most lines are skipped, and a row is large */
        r.start = p;
        r.end = e;
        r.l.msg = r.l.qid = r.l.qid_end = NULL;
        r.event = r.flag = 0;
        r.out = OUT_ROW;
        r.kind = classify(R, p, e, &r.l);
        lines++;
        if (r.kind == K_SKIP) {
            skipped++;
        } else {
            if (r.kind == K_OTHER && r.l.msg != NULL && starts(r.l.prog, r.l.prog_end, "postfix"))
                queue_id(r.l.msg, e, &r.l); /* a Postfix line for the Python parser still belongs to its message */
            if (n == cap) {
                Row *grown = realloc(rows, (cap *= 2) * sizeof(Row));
                if (grown == NULL) {
                    free(rows);
                    rows = NULL;
                    break;
                }
                rows = grown;
            }
            rows[n++] = r;
        }
        if (nl == NULL) break;
        p = nl + 1;
    }
    if (rows != NULL) messages = group_messages(rows, n, trusted, &n_messages);
    for (Py_ssize_t i = 0; messages != NULL && extract && i < n; i++)
        if (rows[i].out == OUT_ROW) rows[i].event = event_of(R, &rows[i]);
    if (messages != NULL && extract) { /* joined before the times are known: one hand-over of the GIL per block, not two */
        join_messages(rows, messages, n_messages, trusted);
        paired = pair_sessions(rows, n, trusted);
    }
    Py_END_ALLOW_THREADS

    if (rows == NULL || messages == NULL || paired < 0) goto nomem;
    if (extract) {
        Py_ssize_t cleared = event_times(rows, n, time_of);
        if (cleared < 0) goto done;
        if (cleared > 0) { /* a stamp Python cannot read (rare): join and pair again without those events */
            for (Py_ssize_t i = 0; i < n; i++) {
                if (rows[i].out == OUT_NONE || rows[i].out == OUT_MESSAGE) rows[i].out = OUT_ROW;
                rows[i].ended = -1;
            }
            join_messages(rows, messages, n_messages, trusted);
            if ((paired = pair_sessions(rows, n, trusted)) < 0) goto nomem;
        }
    }
    list = PyList_New(0);
    counts = extract ? PyDict_New() : Py_NewRef(Py_None);
    if (list == NULL || counts == NULL) goto done;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        Row *r = &rows[i];
        if (r->out == OUT_DROP) {
            dropped[r->kind]++;
            continue;
        }
        if (r->event != E_NONE) events[r->event]++;
        if (r->out == OUT_NONE) continue;
        if (r->out == OUT_MESSAGE && rows[r->head].flag) {
            failed = count_authenticated(counts, &rows[r->head]) < 0; /* no event: a run goes on */
            continue;
        }
        if (in_run(&b, r)) {
            if (cache == NULL && (cache = calloc(CACHED, sizeof(Cached))) == NULL) {
                PyErr_NoMemory();
                failed = 1;
                continue;
            }
            failed = add_to_run(&b, &run, r, rows, list, cache) < 0;
            continue;
        }
        if (in_run_refusal(&b, &run, r)) {
            failed = add_refusal_to_run(&b, &run, r) < 0;
            continue;
        }
        if (flush_run(&b, &run, list) < 0) {
            failed = 1;
        } else if (r->out == OUT_MESSAGE) {
            failed = append(list, complete_message(&b, rows, r, r->head)) < 0;
        } else if (r->event != E_NONE) {
            failed = append(list, simple_event(&b, r, rows)) < 0;
        } else {
            failed = append(list, row_tuple(r, base)) < 0;
            paired = 0; /* a row for Python: join_complete must see the block */
        }
    }
    if (!failed) failed = flush_run(&b, &run, list) < 0;
    if (failed) goto done;
    result = Py_BuildValue("(Onn(nnnnnnnn)(nnnnnnn)OO)", list, lines, skipped, dropped[0], dropped[1], dropped[2], dropped[3], dropped[4],
                           dropped[5], dropped[6], dropped[7], events[E_LOGIN], events[E_END], events[E_ACCEPT], events[E_SENDER],
                           events[E_DELIVERY], events[E_REMOVED], events[E_REFUSAL], paired > 0 ? Py_True : Py_False, counts);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    Py_XDECREF(run.logins);
    Py_XDECREF(run.ips);
    Py_XDECREF(run.users);
    free(run.keys);
    free_cache(cache);
    Py_XDECREF(list);
    Py_XDECREF(counts);
    Py_XDECREF(b.host_str);
    Py_XDECREF(b.instance_str);
    free(rows);
    free(messages);
    free(nets);
    PyBuffer_Release(&view);
    return result;
}

/* -- the detector's login windows (detection.Detector): its two loops over every login ---------------
 *
 * Detector.logins maps a client address to its LoginRecord objects, oldest first. Filing the logins of
 * a LoginRun and sweeping out expired windows touch every login; done here, they are the same dict and
 * list operations as the Python the detector would run (Detector._prune_logins stays for a build without
 * this module; tests/test_linescan.py checks both sweep the same), without the interpreter's cost per login.
 */

static PyObject *s_t, *s_ended, *s_key;

/* Detector._login_run: each login of a run (records, their addresses, their session keys as one string, a line
   each, and the users as logged or None) is filed in logins (address -> list of records) and frees its key in
   sessions; returns (address, record, user as logged or None) of those to report (not in known; None: every one).
   A relay refusal in the run (address None) goes to refused(refusal) in its place, when its client has logins
   filed (Detector._refusal does nothing for one without). */
static PyObject *file_logins(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *records, *ips, *keys, *users, *logins, *sessions, *known, *refused, *report = NULL;
    if (!PyArg_ParseTuple(args, "O!O!UOO!O!OO", &PyList_Type, &records, &PyList_Type, &ips, &keys, &users, &PyDict_Type, &logins,
                          &PyDict_Type, &sessions, &known, &refused))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(records);
    if (PyList_GET_SIZE(ips) != n || (users != Py_None && (!PyList_Check(users) || PyList_GET_SIZE(users) != n))) {
        PyErr_SetString(PyExc_ValueError, "file_logins: a record, an address and a user for each login");
        return NULL;
    }
    if (PyDict_GET_SIZE(sessions)) { /* sessions.pop(key, None) for each key (rare: most sessions end in their block) */
        PyObject *each = PyUnicode_Splitlines(keys, 0);
        if (each == NULL) return NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(each); i++) {
            PyObject *key = PyList_GET_ITEM(each, i);
            int has = PyUnicode_GET_LENGTH(key) ? PyDict_Contains(sessions, key) : 0;
            if (has < 0 || (has && PyDict_DelItem(sessions, key) < 0)) {
                Py_DECREF(each);
                return NULL;
            }
        }
        Py_DECREF(each);
    }
    report = PyList_New(0);
    if (report == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ip = PyList_GET_ITEM(ips, i), *record = PyList_GET_ITEM(records, i);
        if (Py_IS_TYPE(record, &RefusalType)) {
            PyObject *client = refusal_span((RefusalObject *)record, R_IP), *done = NULL;
            int has = client == NULL ? -1 : client == Py_None ? 0 : PyDict_Contains(logins, client);
            Py_XDECREF(client);
            if (has > 0) done = PyObject_CallOneArg(refused, record);
            Py_XDECREF(done);
            if (has < 0 || (has > 0 && done == NULL)) goto fail;
            continue;
        }
        PyObject *filed = PyDict_GetItemWithError(logins, ip); /* borrowed */
        if (filed == NULL) {
            if (PyErr_Occurred()) goto fail;
            PyObject *fresh = PyList_New(1);
            if (fresh == NULL) goto fail;
            PyList_SET_ITEM(fresh, 0, Py_NewRef(record));
            int status = PyDict_SetItem(logins, ip, fresh);
            Py_DECREF(fresh);
            if (status < 0) goto fail;
        } else if (!PyList_Check(filed) || PyList_Append(filed, record) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "file_logins: logins holds lists");
            goto fail;
        }
        if (known != Py_None) {
            PyObject *user = Py_IS_TYPE(record, &RecordType) ? Py_NewRef(((Record *)record)->user) : PyObject_GetAttrString(record, "user");
            if (user == NULL) goto fail;
            int is_known = PyAnySet_Check(known) ? PySet_Contains(known, user) : PySequence_Contains(known, user);
            Py_DECREF(user);
            if (is_known < 0) goto fail;
            if (is_known) continue;
        }
        PyObject *as_logged = users == Py_None ? Py_None : PyList_GET_ITEM(users, i);
        if (append(report, PyTuple_Pack(3, ip, record, as_logged)) < 0) goto fail;
    }
    return report;
fail:
    Py_XDECREF(report);
    return NULL;
}

static int number(PyObject *value, double *out)
{
    if (value == NULL) return -1;
    *out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* Detector._session_end_time(record) < before, and record.t < before: the window can no longer matter (-1: error) */
static int expired(PyObject *record, double before, double cap)
{
    double t, end;
    if (Py_IS_TYPE(record, &RecordType)) {
        Record *r = (Record *)record;
        t = r->t;
        end = r->has_ended ? r->ended : r->key != Py_None ? t + cap : t;
        return t < before && end < before;
    }
    if (number(PyObject_GetAttr(record, s_t), &t) < 0) return -1;
    if (t >= before) return 0;
    PyObject *ended = PyObject_GetAttr(record, s_ended), *key;
    if (ended == NULL) return -1;
    if (ended != Py_None) {
        if (number(ended, &end) < 0) return -1;
    } else {
        Py_DECREF(ended);
        if ((key = PyObject_GetAttr(record, s_key)) == NULL) return -1;
        end = key != Py_None ? t + cap : t; /* still open: counts until the cap */
        Py_DECREF(key);
    }
    return end < before;
}

/* Detector.prune's sweep of logins: records whose window and session both ended before `before` are dropped,
   and addresses left without any. */
static PyObject *prune_logins(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *logins, *ip, *records, *gone = NULL;
    double before, cap;
    if (!PyArg_ParseTuple(args, "O!dd", &PyDict_Type, &logins, &before, &cap)) return NULL;
    gone = PyList_New(0);
    if (gone == NULL) return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(logins, &pos, &ip, &records)) {
        if (!PyList_Check(records)) {
            PyErr_SetString(PyExc_TypeError, "prune_logins: logins holds lists");
            goto fail;
        }
        Py_ssize_t n = PyList_GET_SIZE(records), kept = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int old = expired(PyList_GET_ITEM(records, i), before, cap);
            if (old < 0) goto fail;
            kept += !old;
        }
        if (kept == 0) {
            if (PyList_Append(gone, ip) < 0) goto fail;
        } else if (kept < n) { /* a new list, as the Python sweep makes (replacing a value keeps the dict's keys) */
            PyObject *fresh = PyList_New(0);
            if (fresh == NULL) goto fail;
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *record = PyList_GET_ITEM(records, i);
                int old = expired(record, before, cap);
                if (old < 0 || (!old && PyList_Append(fresh, record) < 0)) {
                    Py_DECREF(fresh);
                    goto fail;
                }
            }
            int status = PyDict_SetItem(logins, ip, fresh);
            Py_DECREF(fresh);
            if (status < 0) goto fail;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(gone); i++)
        if (PyDict_DelItem(logins, PyList_GET_ITEM(gone, i)) < 0) goto fail;
    Py_DECREF(gone);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(gone);
    return NULL;
}

static PyMethodDef methods[] = {
    {"rules", rules, METH_O,
     "rules(classifier_rules()) -> the tables of rollout/logs/rules.py as scan reads them (build once, pass to every scan)"},
    {"scan", scan, METH_VARARGS,
     "scan(block, rules, trusted[, file, offset, time_of, classes]) -> (rows, lines, skipped, dropped, events, joined,\n"
     "authenticated)\n\n"
     "The lines of a block of complete lines that Python must parse (rows), and with time_of and classes given,\n"
     "the events read here (objects of classes, in line order among the rows). trusted: [(4 or 6, network\n"
     "address bytes, prefix length)]; dropped: rows of plain inbound messages, per kind; events: per kind;\n"
     "joined: every row is an event built here, and join_complete would join no more of them;\n"
     "authenticated: the authenticated messages joined here, counted as Detector.authenticated counts them\n"
     "(None without time_of)."},
    {"file_logins", file_logins, METH_VARARGS,
     "file_logins(records, ips, keys, users, logins, sessions, known, refused) -> [(address, record, user as logged)] to\n"
     "report: Detector._login_run's loop over a LoginRun, filing each record in logins and freeing its key in sessions,\n"
     "and handing each relay refusal in it whose client has logins filed to refused"},
    {"prune_logins", prune_logins, METH_VARARGS,
     "prune_logins(logins, before, cap) -> None: Detector.prune's sweep of logins, dropping records whose window and\n"
     "session (open ones count until cap seconds) both ended before `before`"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linescan", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__linescan(void)
{
    PyObject **names[] = {&reject, &defer, &relay_reason, &k_t, &k_ip, &k_auth, &k_sasl_user, &k_sender, &k_rcpts,
                          &k_lines, &k_orig_ip, &k_orig_qid, &s_t, &s_ended, &s_key};
    const char *values[] = {"reject", "defer", "relay", "t", "ip", "auth", "sasl_user", "sender", "rcpts", "lines",
                            "orig_ip", "orig_qid", "t", "ended", "key"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i] = PyUnicode_InternFromString(values[i])) == NULL) return NULL;
    if (PyType_Ready(&RecordType) < 0 || PyType_Ready(&RefusalType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    /* rollout/logs/native.py's API: raise both when the functions, their arguments or the classes change */
    if (m != NULL && (PyModule_AddObjectRef(m, "LoginRecord", (PyObject *)&RecordType) < 0
                     || PyModule_AddObjectRef(m, "Refusal", (PyObject *)&RefusalType) < 0 || PyModule_AddIntConstant(m, "API", 4) < 0))
        Py_CLEAR(m);
    return m;
}
