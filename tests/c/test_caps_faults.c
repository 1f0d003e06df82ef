/* Power caps under faults, on the fake NVML (issue 12, direct mode): a lost GPU beside a healthy one, the
 * guardian killed under a live owner, journals cut short or corrupted at every byte, a state directory
 * that others can write to or that holds planted links, a state directory turned read-only, and a limit
 * that does not take.  Every case asserts the fake GPU's limit, not only exit codes.  restore_times prints
 * the table of RELIABILITY.md. */
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "jc_caps_helpers.h"
#include "jc_cli_run.h"
#include "jc_test.h"

#define H100_UUID "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f"
#define UUID0 "GPU-11111111-2222-4333-8444-555555555555"
#define UUID1 "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

/* Same state file and state directory, another scenario (same GPUs, other faults). */
static void switch_scenario(const char *scenario) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s/scenarios/%s.scn", env_or_die("JC_TEST_DATA"), scenario);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", buf, 1);
}

static void write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0644);
    if (fd < 0) JC_FAILF("cannot write %s: %s", path, strerror(errno));
    ASSERT_EQ(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* The file's bytes (malloc'd), *len its size; NULL when it does not exist. */
static char *read_whole(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    char *buf = malloc(8192);
    ASSERT_TRUE(buf != NULL);
    ssize_t n = read(fd, buf, 8192);
    close(fd);
    ASSERT_TRUE(n >= 0);
    *len = (size_t)n;
    return buf;
}

static int exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static uint64_t fnv1a64(const char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

/* A persistent-cap journal with a valid checksum, as an attacker who knows the format would write it. */
static void forge_journal(const char *path, const char *uuid, unsigned original_mw, unsigned set_mw) {
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "joulecap-cap-journal 2\nuuid %s\noriginal_mw %u\nset_mw %u\nbase_mw 0\nowner_pid 0\n"
                     "owner_start 0\nguardian_pid 0\nguardian_start 0\ncreated 1764064769.123\n"
                     "owner_command joulecap cap set\n",
                     uuid, original_mw, set_mw);
    n += snprintf(text + n, sizeof text - (size_t)n, "checksum fnv1a64 %016llx\n",
                  (unsigned long long)fnv1a64(text, (size_t)n));
    write_file(path, text, (size_t)n);
}

static double percentile(double *v, int n, double q) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    int k = (int)(q * (n - 1) + 0.5);
    return v[k];
}

/* ------------------------------------------------------------------------------------------------------
 * A child that opens a session, caps, reports, and dies by SIGKILL (die = 0: waits to be killed).  ro = 1
 * makes the state directory read-only first (a read-only bind mount in a private mount namespace as root,
 * chmod 0500 otherwise).
 * ---------------------------------------------------------------------------------------------------- */

typedef struct session_report {
    int guardian;
    int ro; /* the state directory was made read-only (and checked to be) */
} session_report;

static pid_t child_session(const char *gpus, double watts, int ro, int die, session_report *rep) {
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        session_report r = {-1, 0};
        int ns = 0;
        if (ro && geteuid() == 0)
            ns = unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
        jc_cap_options o;
        jc_cap_options_init(&o);
        o.gpus = gpus;
        jc_cap_session *s = NULL;
        if (jc_cap_session_open(&o, &s) == JC_OK && jc_cap_session_set(s, -1, watts) == JC_OK) {
            jc_cap_info info;
            if (jc_cap_session_info_get(s, 0, &info) == JC_OK) r.guardian = info.guardian_pid;
        } else {
            fprintf(stderr, "child: %s\n", jc_last_detail());
        }
        if (ro && ns)
            r.ro = mount(journal_dir, journal_dir, NULL, MS_BIND, NULL) == 0 &&
                   mount(NULL, journal_dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) == 0;
        else if (ro && geteuid() != 0)
            r.ro = chmod(journal_dir, 0500) == 0;
        if (r.ro) {
            char probe[400];
            snprintf(probe, sizeof probe, "%s/probe", journal_dir);
            int probe_fd = open(probe, O_WRONLY | O_CREAT, 0600);
            if (probe_fd >= 0) r.ro = 0, close(probe_fd), unlink(probe);
        }
        child_report(fd, &r, sizeof r);
        if (die) raise(SIGKILL);
        for (;;) pause();
    }
    child_read_report(fd, rep, sizeof *rep);
    ASSERT_TRUE(rep->guardian > 0);
    return pid;
}

static void wait_gone(int pid) {
    double t0 = now_s();
    while (!pid_gone(pid) && now_s() - t0 < 2) sleep_ms(2);
    ASSERT_TRUE(pid_gone(pid));
}

/* ------------------------------------------------------------------------------------------------------
 * 1. A lost GPU never blocks another GPU's cap commands.
 * ---------------------------------------------------------------------------------------------------- */

TEST(lost_gpu_does_not_block_the_other) {
    use_scenario("two-gpus");
    ASSERT_OK(jc_cap_set_persistent("all", 300, NULL, NULL, 0));
    ASSERT_EQ(fake_limit_mw_of(0), 300000);
    ASSERT_EQ(fake_limit_mw_of(1), 300000);
    switch_scenario("two-gpus-first-lost"); /* NVML GPU 0 falls off the bus; its journal stays */

    /* get: the lost GPU with its reason, the other as usual. */
    jc_cap_info list[4];
    int n = 0;
    ASSERT_OK(jc_cap_list(NULL, list, 4, &n));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(list[0].status, JC_ERR_GPU_LOST);
    ASSERT_CONTAINS(list[0].error, "GPU is lost");
    ASSERT_EQ(list[1].status, JC_OK);
    ASSERT_STR_EQ(list[1].uuid, UUID1);
    ASSERT_EQ(list[1].index, 1);
    ASSERT_EQ(list[1].manager, JC_CAP_MANAGER_PERSISTENT);
    jc_cap_info one;
    ASSERT_STATUS(jc_cap_info_get("0", NULL, &one), JC_ERR_GPU_LOST);
    ASSERT_CONTAINS(jc_last_detail(), "GPU is lost");
    ASSERT_OK(jc_cap_info_get(UUID1, NULL, &one));
    result_t r = cli("cap", "get", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, UUID1);
    ASSERT_CONTAINS(r.out, "300 W");
    ASSERT_CONTAINS(r.err, "GPU is lost");
    free_result(&r);
    r = cli("cap", "get", "--json", NULL);
    EXPECT_CODE(r, 3);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"status\":\"JC_ERR_GPU_LOST\"");
    free_result(&r);

    /* restore: the healthy GPU's journal is restored, the lost one's kept and reported. */
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, "GPU 1 (" UUID1 "): restored");
    ASSERT_CONTAINS(r.out, UUID0 ": FAILED");
    ASSERT_CONTAINS(r.out, "GPU is lost");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw_of(1), 700000);
    ASSERT_EQ(journal_count(), 1);

    /* set and reset of all GPUs: the healthy one is done, the lost one reported. */
    r = cli("cap", "set", "250", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "GPU 0 cannot be used");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw_of(1), 250000);
    r = cli("cap", "reset", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, "GPU 1 (" UUID1 "): put back the saved limit: now 700 W");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw_of(1), 700000);
    /* Naming the lost GPU is an error, and nothing changes. */
    r = cli("cap", "set", "--gpu", "0", "250", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "GPU is lost");
    free_result(&r);
    ASSERT_STATUS(jc_cap_set_persistent("0,1", 250, NULL, NULL, 0), JC_ERR_GPU_LOST);
    ASSERT_EQ(fake_limit_mw_of(1), 700000);

    /* Sessions: all = the usable GPUs (the note says which was left out); naming the lost one fails. */
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_GPU_LOST);
    ASSERT_OK(jc_cap_session_open(NULL, &s));
    ASSERT_EQ(jc_cap_session_gpu_count(s), 1);
    ASSERT_CONTAINS(jc_cap_session_note(s), "GPU is lost");
    ASSERT_OK(jc_cap_session_set(s, 1, 300));
    ASSERT_EQ(fake_limit_mw_of(1), 300000);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw_of(1), 700000);

    /* The guardian restores the healthy GPU when its owner dies. */
    session_report rep;
    pid_t pid = child_session(NULL, 260, 0, 1, &rep);
    child_reap(pid);
    double t = wait_limit_of(1, 700000, 1.0, 2);
    if (t < 0) JC_FAILF("GPU 1 not restored by the guardian: %u mW", fake_limit_mw_of(1));
    wait_gone(rep.guardian);
    ASSERT_EQ(journal_count(), 1); /* the lost GPU's */

    /* The GPU comes back: its journal is restored. */
    switch_scenario("two-gpus");
    ASSERT_EQ(fake_limit_mw_of(0), 300000);
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw_of(0), 700000);
    ASSERT_EQ(journal_count(), 0);
}

/* ------------------------------------------------------------------------------------------------------
 * 2. The owner sees its guardian's death.
 * ---------------------------------------------------------------------------------------------------- */

TEST(guardian_killed_owner_restores_at_next_set) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 250));
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_EQ(kill(info.guardian_pid, SIGKILL), 0);
    wait_gone(info.guardian_pid);
    ASSERT_EQ(fake_limit_mw(), 250000); /* nobody has put it back yet */
    double t0 = now_s();
    ASSERT_STATUS(jc_cap_session_set(s, 0, 300), JC_ERR_UNAVAILABLE);
    double dt = now_s() - t0;
    ASSERT_CONTAINS(jc_last_detail(), "guardian");
    ASSERT_CONTAINS(jc_last_detail(), "died");
    ASSERT_CONTAINS(jc_last_detail(), "500 W");
    ASSERT_EQ(fake_limit_mw(), 500000); /* put back by the owner, at once */
    ASSERT_EQ(journal_count(), 0);
    fprintf(stderr, "  the owner put the saved limit back in %.1f ms\n", dt * 1000);
    /* And stays refused, without changing anything. */
    ASSERT_STATUS(jc_cap_session_set(s, 0, 300), JC_ERR_UNAVAILABLE);
    ASSERT_STATUS(jc_cap_session_reset(s, 0, NULL), JC_ERR_UNAVAILABLE);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_restore(s));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 500000);
    /* A new session (a new guardian) caps again. */
    s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 500000);
}

/* ------------------------------------------------------------------------------------------------------
 * 3. Damaged journals: never trusted, never removed, a repair that works.
 * ---------------------------------------------------------------------------------------------------- */

TEST(journal_cut_or_flipped_is_never_trusted) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    ASSERT_OK(jc_cap_set_persistent("0", 250, NULL, NULL, 0));
    char path[400];
    snprintf(path, sizeof path, "%s/%s.journal", journal_dir, H100_UUID);
    size_t len = 0;
    char *good = read_whole(path, &len);
    ASSERT_TRUE(good && len > 100 && len < 1000);
    ASSERT_CONTAINS(good, "checksum fnv1a64 ");
    /* Cut at every length, through the command an operator runs. */
    double t0 = now_s();
    for (size_t cut = 0; cut < len; cut++) {
        write_file(path, good, cut);
        result_t r = cli("cap", "restore", NULL);
        if (r.code != 3 || !strstr(r.out, "FAILED") || strstr(r.out, ": restored:") || !strstr(r.err, path) ||
            !strstr(r.err, "restore --discard " H100_UUID)) {
            show(&r);
            JC_FAILF("journal cut to %zu of %zu bytes", cut, len);
        }
        free_result(&r);
        if (fake_limit_mw() != 250000) JC_FAILF("cut to %zu bytes: limit %u mW", cut, fake_limit_mw());
        size_t l2 = 0;
        char *now = read_whole(path, &l2);
        if (!now || l2 != cut || memcmp(now, good, cut) != 0) JC_FAILF("cut to %zu bytes: journal changed", cut);
        free(now);
    }
    fprintf(stderr, "  %zu cut journals refused by 'joulecap cap restore' in %.1f s\n", len, now_s() - t0);
    /* Every byte changed: each of its 8 bits, and all of them, through the library. */
    char *buf = malloc(len);
    ASSERT_TRUE(buf != NULL);
    jc_cap_restore_entry e[4];
    int n = 0, tried = 0;
    t0 = now_s();
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b <= 8; b++) {
            memcpy(buf, good, len);
            buf[i] = (char)(buf[i] ^ (b == 8 ? 0xff : 1 << b));
            write_file(path, buf, len);
            jc_status st = jc_cap_restore(NULL, e, 4, &n);
            if (st == JC_OK || n != 1 || e[0].action != JC_CAP_RESTORE_FAILED || e[0].was != JC_CAP_MANAGER_DAMAGED)
                JC_FAILF("byte %zu ^ 0x%02x: status %s, %d entries, action %d (%s)", i, b == 8 ? 0xff : 1 << b,
                         jc_status_name(st), n, n ? (int)e[0].action : -1, n ? e[0].note : "");
            if (fake_limit_mw() != 250000) JC_FAILF("byte %zu flipped: limit %u mW", i, fake_limit_mw());
            size_t l2 = 0;
            char *now = read_whole(path, &l2);
            if (!now || l2 != len || memcmp(now, buf, len) != 0) JC_FAILF("byte %zu flipped: journal changed", i);
            free(now);
            tried++;
        }
    }
    fprintf(stderr, "  %d corrupted journals refused by jc_cap_restore in %.1f s\n", tried, now_s() - t0);
    free(buf);
    /* The intact journal restores. */
    write_file(path, good, len);
    result_t r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "restored");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
    free(good);
}

TEST(damaged_journal_blocks_changes_until_discarded) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    ASSERT_OK(jc_cap_set_persistent("0", 250, NULL, NULL, 0));
    char path[400];
    snprintf(path, sizeof path, "%s/%s.journal", journal_dir, H100_UUID);
    write_file(path, "", 0); /* emptied */
    /* Shown, and refused by everything that would trust it. */
    result_t r = cli("cap", "get", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "damaged");
    free_result(&r);
    r = cli("cap", "get", "--json", NULL);
    ASSERT_CONTAINS(r.out, "\"managed_by\":\"damaged\"");
    free_result(&r);
    r = cli("cap", "set", "--gpu", "0", "300", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "it is empty");
    ASSERT_CONTAINS(r.err, "restore --discard " H100_UUID);
    free_result(&r);
    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 3);
    free_result(&r);
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_TRUE(strstr(r.out, ": restored:") == NULL);
    free_result(&r);
    jc_cap_session *s = NULL;
    ASSERT_STATUS(jc_cap_session_open(NULL, &s), JC_ERR_IO);
    ASSERT_CONTAINS(jc_last_detail(), path);
    ASSERT_EQ(fake_limit_mw(), 250000);
    ASSERT_TRUE(exists(path));
    /* The repair: set it aside (kept), then set the limit wanted. */
    r = cli("cap", "restore", "--discard", H100_UUID, NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, ".journal.bad-");
    ASSERT_CONTAINS(r.out, "power limit now 250 W");
    ASSERT_CONTAINS(r.out, "cap reset --gpu " H100_UUID);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 250000);
    ASSERT_EQ(journal_count(), 0);
    int kept = 0;
    DIR *d = opendir(journal_dir);
    for (struct dirent *de; (de = readdir(d)) != NULL;) kept += strstr(de->d_name, ".journal.bad-") != NULL;
    closedir(d);
    ASSERT_EQ(kept, 1);
    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 700000);
    /* No journal; a name that is not a UUID; an intact journal (set aside, its saved limit said). */
    r = cli("cap", "restore", "--discard", H100_UUID, NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "no journal");
    free_result(&r);
    r = cli("cap", "restore", "--discard", "../../etc/passwd", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    r = cli("cap", "restore", "--gpu", "0", "--discard", H100_UUID, NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    ASSERT_OK(jc_cap_set_persistent("0", 300, NULL, NULL, 0));
    r = cli("cap", "restore", "--discard", H100_UUID, NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "it had saved 700 W, not put back");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);
    /* A live session's journal is not set aside. */
    s = open_gpu0();
    r = cli("cap", "restore", "--discard", H100_UUID, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "live");
    free_result(&r);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(journal_count(), 0);
}

/* ------------------------------------------------------------------------------------------------------
 * 4. The state directory: ours, not writable by others, no links followed.
 * ---------------------------------------------------------------------------------------------------- */

TEST(state_dir_attacks_are_refused) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(300000);
    char evil[400], journal[500], lock[500], target[400], forged[400];
    snprintf(evil, sizeof evil, "%s/evil", tmpdir);
    snprintf(journal, sizeof journal, "%s/%s.journal", evil, H100_UUID);
    snprintf(lock, sizeof lock, "%s/%s.lock", evil, H100_UUID);
    snprintf(target, sizeof target, "%s/created-by-the-link", tmpdir);
    snprintf(forged, sizeof forged, "%s/forged.journal", tmpdir);
    ASSERT_EQ(mkdir(evil, 0700), 0);
    ASSERT_EQ(chmod(evil, 0777), 0);
    forge_journal(journal, H100_UUID, 450000, 250000);
    ASSERT_EQ(symlink(target, lock), 0);

    /* World-writable: refused outright, whatever the command. */
    result_t r = cli("cap", "restore", "--state-dir", evil, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "writable by everyone");
    ASSERT_CONTAINS(r.err, "chmod go-w");
    free_result(&r);
    r = cli("cap", "set", "--state-dir", evil, "--gpu", "0", "200", NULL);
    EXPECT_CODE(r, 3);
    free_result(&r);
    setenv("JOULECAP_STATE_DIR", evil, 1);
    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "chmod go-w");
    free_result(&r);
    jc_cap_session *s = NULL;
    ASSERT_STATUS(jc_cap_session_open(NULL, &s), JC_ERR_NO_PERMISSION);
    setenv("JOULECAP_STATE_DIR", journal_dir, 1);
    ASSERT_EQ(chmod(evil, 0770), 0);
    r = cli("cap", "restore", "--state-dir", evil, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "writable by its group");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_TRUE(!exists(target));

    /* Made private, but the planted links are still there: never followed. */
    ASSERT_EQ(chmod(evil, 0700), 0);
    r = cli("cap", "restore", "--state-dir", evil, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, "symbolic link");
    free_result(&r);
    r = cli("cap", "set", "--state-dir", evil, "--gpu", "0", "200", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "symbolic link");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_TRUE(!exists(target));
    ASSERT_EQ(unlink(lock), 0);
    ASSERT_EQ(unlink(journal), 0);
    forge_journal(forged, H100_UUID, 450000, 250000);
    ASSERT_EQ(symlink(forged, journal), 0);
    r = cli("cap", "restore", "--state-dir", evil, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, "symbolic link");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_TRUE(exists(forged));

    /* Control: the same forged journal as a plain file of a safe directory is read, so the refusals above
     * came from the checks, not from a bad checksum. */
    ASSERT_EQ(unlink(journal), 0);
    forge_journal(journal, H100_UUID, 450000, 250000);
    r = cli("cap", "restore", "--state-dir", evil, NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 450000);

    /* A directory above it that others may write to (no sticky bit). */
    char open_parent[400], inside[500];
    snprintf(open_parent, sizeof open_parent, "%s/open", tmpdir);
    snprintf(inside, sizeof inside, "%s/state", open_parent);
    ASSERT_EQ(mkdir(open_parent, 0700), 0);
    ASSERT_EQ(mkdir(inside, 0700), 0);
    ASSERT_EQ(chmod(open_parent, 0777), 0);
    r = cli("cap", "restore", "--state-dir", inside, NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "above the state directory");
    free_result(&r);
    ASSERT_EQ(chmod(open_parent, 01777), 0); /* sticky, as /tmp: accepted */
    r = cli("cap", "restore", "--state-dir", inside, NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);

    /* Another user's directory (as root: tests run as root in CI). */
    if (geteuid() == 0) {
        char other[400];
        snprintf(other, sizeof other, "%s/other", tmpdir);
        ASSERT_EQ(mkdir(other, 0700), 0);
        ASSERT_EQ(chown(other, 65534, 65534), 0);
        r = cli("cap", "restore", "--state-dir", other, NULL);
        EXPECT_CODE(r, 3);
        ASSERT_CONTAINS(r.err, "chown 0");
        free_result(&r);
    } else {
        fprintf(stderr, "  not root: another user's directory not tried\n");
    }
    ASSERT_EQ(fake_limit_mw(), 450000);
}

/* ------------------------------------------------------------------------------------------------------
 * 6. Read-back: a limit that does not take is an error, never a journal saying it took.
 * ---------------------------------------------------------------------------------------------------- */

#define NOOP_UUID "GPU-3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"

TEST(limit_that_does_not_take_is_an_error) {
    use_scenario("limit-noop"); /* sets return SUCCESS and change nothing; the limit stays 700 W */
    result_t r = cli("cap", "set", "--gpu", "0", "300", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "did not take: asked 300 W, the GPU reports 700 W");
    ASSERT_TRUE(strstr(r.out, "power limit 300 W") == NULL);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0); /* nothing changed: no journal */
    ASSERT_STATUS(jc_cap_set_persistent("0", 250, NULL, NULL, 0), JC_ERR_NVML);
    ASSERT_CONTAINS(jc_last_detail(), "asked 250 W, the GPU reports 700 W");
    ASSERT_EQ(journal_count(), 0);
    /* A session: the set fails, and its journal still says "not changed". */
    jc_cap_session *s = open_gpu0();
    ASSERT_STATUS(jc_cap_session_set(s, 0, 300), JC_ERR_NVML);
    ASSERT_CONTAINS(jc_last_detail(), "asked 300 W, the GPU reports 700 W");
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_TRUE(isnan(info.set_limit_w));
    ASSERT_NEAR(info.limit_w, 700, 1e-9);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(journal_count(), 0);
    /* A restore that does not take is a failure, its journal kept. */
    char path[400];
    snprintf(path, sizeof path, "%s/%s.journal", journal_dir, NOOP_UUID);
    forge_journal(path, NOOP_UUID, 500000, 250000);
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.out, "FAILED");
    ASSERT_CONTAINS(r.out, "asked 500 W, the GPU reports 700 W");
    ASSERT_TRUE(strstr(r.out, ": restored:") == NULL);
    free_result(&r);
    ASSERT_EQ(journal_count(), 1);
    ASSERT_EQ(fake_limit_mw(), 700000);
}

/* ------------------------------------------------------------------------------------------------------
 * 7. A state directory turned read-only during a session: the guardian still restores.
 * ---------------------------------------------------------------------------------------------------- */

TEST(read_only_state_dir_guardian_still_restores) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    session_report rep;
    pid_t pid = child_session("0", 250, 1, 1, &rep);
    child_reap(pid);
    if (!rep.ro) {
        fprintf(stderr, "  skipped: cannot make the state directory read-only here (no mount namespace)\n");
        wait_limit(500000, 1.0);
        return;
    }
    double t = wait_limit_of(0, 500000, 1.0, 2);
    if (t < 0) JC_FAILF("not restored with a read-only state directory: %u mW", fake_limit_mw());
    fprintf(stderr, "  restored %.0f ms after the owner died, state directory read-only\n", t * 1000);
    wait_gone(rep.guardian);
    chmod(journal_dir, 0700); /* (the chmod variant; the bind mount ended with the guardian) */
    /* The guardian could not remove the journal; restore tidies up, putting the same limit back. */
    ASSERT_EQ(journal_count(), 1);
    result_t r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
}

/* ------------------------------------------------------------------------------------------------------
 * 8. Time to restore, per case: the table of RELIABILITY.md.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct timing {
    const char *name;
    int runs, restored;
    double ms[40];
} timing;

static void report(timing *t) {
    double p50 = t->runs ? percentile(t->ms, t->runs, 0.5) : NAN;
    double max = t->runs ? t->ms[t->runs - 1] : NAN;
    fprintf(stderr, "| %s | %d | %d | %.1f | %.1f |\n", t->name, t->runs, t->restored, p50, max);
}

TEST(restore_times) {
    enum { RUNS = 20 };
    timing owner = {"owner SIGKILL, guardian restores", 0, 0, {0}};
    timing guard = {"guardian SIGKILL, owner's next set restores", 0, 0, {0}};
    timing lost = {"owner SIGKILL, other GPU lost: guardian restores the healthy one", 0, 0, {0}};
    timing ro = {"owner SIGKILL, state dir read-only: guardian restores", 0, 0, {0}};
    timing stale = {"owner and guardian SIGKILL: 'joulecap cap restore'", 0, 0, {0}};
    use_scenario("h100-constant-300w");
    for (int i = 0; i < RUNS; i++) {
        fake_set_limit_mw(500000);
        session_report rep;
        pid_t pid = child_session("0", 250, 0, 1, &rep);
        child_reap(pid);
        double t = wait_limit_of(0, 500000, 2.0, 1);
        owner.ms[owner.runs++] = t * 1000;
        owner.restored += t >= 0;
        wait_gone(rep.guardian);
    }
    for (int i = 0; i < RUNS; i++) {
        fake_set_limit_mw(500000);
        jc_cap_session *s = open_gpu0();
        ASSERT_OK(jc_cap_session_set(s, 0, 250));
        jc_cap_info info;
        ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
        kill(info.guardian_pid, SIGKILL);
        wait_gone(info.guardian_pid);
        double t0 = now_s();
        jc_status st = jc_cap_session_set(s, 0, 300);
        guard.ms[guard.runs++] = (now_s() - t0) * 1000;
        guard.restored += st == JC_ERR_UNAVAILABLE && fake_limit_mw() == 500000;
        jc_cap_session_close(s);
    }
    for (int i = 0; i < RUNS / 2; i++) {
        fake_set_limit_mw(500000);
        session_report rep;
        pid_t pid = child_session("0", 250, 0, 0, &rep);
        kill(rep.guardian, SIGKILL);
        wait_gone(rep.guardian);
        kill(pid, SIGKILL);
        child_reap(pid);
        result_t r = cli("cap", "restore", NULL);
        stale.ms[stale.runs++] = r.seconds * 1000;
        stale.restored += r.code == 0 && fake_limit_mw() == 500000;
        free_result(&r);
    }
    for (int i = 0; i < RUNS / 2; i++) {
        fake_set_limit_mw(500000);
        session_report rep;
        pid_t pid = child_session("0", 250, 1, 1, &rep);
        child_reap(pid);
        double t = wait_limit_of(0, 500000, 2.0, 1);
        wait_gone(rep.guardian);
        chmod(journal_dir, 0700);
        if (!rep.ro) break;
        ro.ms[ro.runs++] = t * 1000;
        ro.restored += t >= 0;
        result_t r = cli("cap", "restore", NULL); /* the journal the guardian could not remove */
        free_result(&r);
    }
    use_scenario("two-gpus-first-lost");
    for (int i = 0; i < RUNS / 2; i++) {
        session_report rep;
        pid_t pid = child_session(NULL, 250, 0, 1, &rep);
        child_reap(pid);
        double t = wait_limit_of(1, 700000, 2.0, 1);
        lost.ms[lost.runs++] = t * 1000;
        lost.restored += t >= 0;
        wait_gone(rep.guardian);
    }
    fprintf(stderr, "| case | runs | limits restored | p50 ms | max ms |\n|---|---|---|---|---|\n");
    report(&owner);
    report(&guard);
    report(&lost);
    report(&ro);
    report(&stale);
    ASSERT_EQ(owner.restored, owner.runs);
    ASSERT_EQ(guard.restored, guard.runs);
    ASSERT_EQ(lost.restored, lost.runs);
    ASSERT_EQ(ro.restored, ro.runs);
    ASSERT_EQ(stale.restored, stale.runs);
}

JC_TEST_MAIN(TEST_ENTRY(lost_gpu_does_not_block_the_other), TEST_ENTRY(guardian_killed_owner_restores_at_next_set),
             TEST_ENTRY(journal_cut_or_flipped_is_never_trusted),
             TEST_ENTRY(damaged_journal_blocks_changes_until_discarded), TEST_ENTRY(state_dir_attacks_are_refused),
             TEST_ENTRY(limit_that_does_not_take_is_an_error), TEST_ENTRY(read_only_state_dir_guardian_still_restores),
             TEST_ENTRY(restore_times))
