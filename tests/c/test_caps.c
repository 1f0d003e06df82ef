/* Power caps on the fake NVML: sessions that always restore (close, SIGKILL, SIGTERM, SIGINT, abort, exit
 * without close), permission and range errors, ownership between processes, stale journals, reset, and the
 * `joulecap cap` command.  The test process, the guardians it starts and the CLI share one fake GPU through
 * JOULECAP_FAKE_NVML_STATE; journals go to a temporary JOULECAP_STATE_DIR. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_caps_helpers.h"
#include "jc_cli_run.h"
#include "jc_test.h"
#include "joulecap.h"
#include "sources/nvml_api.h"

TEST(set_within_range_reads_back) {
    use_scenario("h100-constant-300w");
    ASSERT_EQ(fake_limit_mw(), 700000);
    jc_cap_session *s = open_gpu0();
    ASSERT_EQ(jc_cap_session_gpu_count(s), 1);
    ASSERT_EQ(fake_limit_mw(), 700000); /* opening changes nothing */
    ASSERT_EQ(journal_count(), 1);      /* but the journal is written before any change */
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_OK(jc_cap_session_set(s, -1, 287.5));
    ASSERT_EQ(fake_limit_mw(), 287500);
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_EQ(info.index, 0);
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_SESSION);
    ASSERT_EQ(info.owner_pid, getpid());
    ASSERT_TRUE(info.guardian_pid > 0 && info.guardian_alive);
    ASSERT_NEAR(info.limit_w, 287.5, 1e-9);
    ASSERT_NEAR(info.saved_limit_w, 700, 1e-9);
    ASSERT_NEAR(info.set_limit_w, 287.5, 1e-9);
    ASSERT_NEAR(info.min_limit_w, 200, 1e-9);
    ASSERT_NEAR(info.max_limit_w, 700, 1e-9);
    /* The same view from outside the session. */
    jc_cap_info g;
    ASSERT_OK(jc_cap_info_get("0", NULL, &g));
    ASSERT_EQ(g.manager, JC_CAP_MANAGER_SESSION);
    ASSERT_EQ(g.owner_pid, getpid());
    ASSERT_TRUE(strstr(g.owner_command, "test_caps") != NULL);
    /* A GPU the session does not own. */
    ASSERT_STATUS(jc_cap_session_set(s, 3, 300), JC_ERR_NOT_FOUND);
    int guardian = info.guardian_pid;
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0);
    ASSERT_TRUE(pid_gone(guardian)); /* close waits for the guardian and reaps it */
}

TEST(out_of_range_states_the_range) {
    use_scenario("h100-constant-300w");
    jc_cap_session *s = open_gpu0();
    ASSERT_STATUS(jc_cap_session_set(s, 0, 9999), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "200 W to 700 W");
    ASSERT_STATUS(jc_cap_session_set(s, 0, 199.9), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "200 W to 700 W");
    ASSERT_STATUS(jc_cap_session_set(s, 0, -5), JC_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(jc_cap_session_set(s, 0, NAN), JC_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_OK(jc_cap_session_set(s, 0, 200)); /* the bounds themselves are fine */
    ASSERT_OK(jc_cap_session_set(s, 0, 700));
    ASSERT_OK(jc_cap_session_close(s));
    char note[256];
    ASSERT_STATUS(jc_cap_set_persistent("0", 9999, NULL, note, sizeof note), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "200 W to 700 W");
    ASSERT_EQ(journal_count(), 0);
}

TEST(no_permission_at_open_limit_untouched) {
    use_scenario("no-permission");
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = (jc_cap_session *)1;
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_NO_PERMISSION);
    ASSERT_TRUE(s == NULL);
    ASSERT_CONTAINS(jc_last_detail(), "root");
    ASSERT_CONTAINS(jc_last_detail(), "CAP_SYS_ADMIN");
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0);
    ASSERT_STATUS(jc_cap_set_persistent("0", 300, NULL, NULL, 0), JC_ERR_NO_PERMISSION);
    ASSERT_CONTAINS(jc_last_detail(), "CAP_SYS_ADMIN");
    ASSERT_EQ(journal_count(), 0);
    jc_cap_reset_kind did;
    ASSERT_STATUS(jc_cap_reset("0", NULL, &did, NULL, NULL, 0), JC_ERR_NO_PERMISSION);
    ASSERT_EQ(fake_limit_mw(), 700000);
    /* Reading limits needs no permission. */
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_NEAR(info.limit_w, 700, 1e-9);
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_NONE);
}

TEST(close_restores_the_original_not_the_default) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000); /* somebody capped it before us */
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_OK(jc_cap_session_restore(s)); /* back now, session still open */
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_set(s, 0, 250));
    ASSERT_EQ(fake_limit_mw(), 250000);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
    ASSERT_OK(jc_cap_session_close(NULL));
}

TEST(unknown_gpu_lists_gpus) {
    use_scenario("h100-constant-300w");
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "3";
    jc_cap_session *s = NULL;
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_NOT_FOUND);
    ASSERT_CONTAINS(jc_last_detail(), "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f");
    o.gpus = "none";
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_INVALID_ARGUMENT);
    jc_cap_info info;
    ASSERT_STATUS(jc_cap_info_get("7", NULL, &info), JC_ERR_NOT_FOUND);
    ASSERT_EQ(journal_count(), 0);
}

/* ------------------------------------------------------------------------------------------------------
 * The owner dies: the guardian restores within 1 s.
 * ---------------------------------------------------------------------------------------------------- */

static void check_restored_after_death(int how, int expect_signal) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    int guardian = 0;
    pid_t pid = child_capping(how, &guardian);
    if (how == DIE_PGRP_SIGINT) {
        sleep_ms(20);
        ASSERT_TRUE(getpgid(guardian) != pid); /* the guardian is not in the owner's process group */
        ASSERT_EQ(kill(-pid, SIGINT), 0);      /* Ctrl-C to the owner's whole group */
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    if (expect_signal) {
        ASSERT_TRUE(WIFSIGNALED(status));
        ASSERT_EQ(WTERMSIG(status), expect_signal);
    } else {
        ASSERT_TRUE(WIFEXITED(status));
    }
    double t = wait_limit(500000, 1.0);
    if (t < 0) JC_FAILF("limit not restored within 1 s: %u mW", fake_limit_mw());
    fprintf(stderr, "  restored %.0f ms after the owner died\n", t * 1000);
    /* The guardian removes the journal and exits. */
    double t0 = now_s();
    while ((journal_count() != 0 || !pid_gone(guardian)) && now_s() - t0 < 2) sleep_ms(5);
    ASSERT_EQ(journal_count(), 0);
    ASSERT_TRUE(pid_gone(guardian));
}

TEST(owner_sigkill_restored) { check_restored_after_death(DIE_SIGKILL, SIGKILL); }
TEST(owner_sigterm_restored) { check_restored_after_death(DIE_SIGTERM, SIGTERM); }
TEST(owner_sigint_restored) { check_restored_after_death(DIE_SIGINT, SIGINT); }
TEST(owner_abort_restored) { check_restored_after_death(DIE_ABORT, SIGABRT); }
TEST(owner_exit_without_close_restored) { check_restored_after_death(DIE_EXIT, 0); }
TEST(process_group_ctrl_c_restored) { check_restored_after_death(DIE_PGRP_SIGINT, SIGINT); }

/* ------------------------------------------------------------------------------------------------------
 * Ownership.
 * ---------------------------------------------------------------------------------------------------- */

TEST(second_session_is_busy_naming_the_owner) {
    use_scenario("h100-constant-300w");
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "process %d", (int)getpid());
    /* Another process. */
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        jc_cap_options o;
        jc_cap_options_init(&o);
        o.gpus = "0";
        jc_cap_session *s2 = NULL;
        jc_status st = jc_cap_session_open(&o, &s2);
        char msg[1100];
        snprintf(msg, sizeof msg, "%d %s", (int)st, jc_last_detail());
        child_report(fd, msg, strlen(msg) + 1);
        _exit(0);
    }
    char msg[1100] = "";
    child_read_text(fd, msg, sizeof msg);
    child_reap(pid);
    ASSERT_EQ(atoi(msg), JC_ERR_BUSY);
    ASSERT_CONTAINS(msg, pidtext);
    ASSERT_CONTAINS(msg, "test_caps"); /* the owner's command line */
    ASSERT_EQ(fake_limit_mw(), 300000);
    /* The same process, a second session. */
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s2 = NULL;
    ASSERT_STATUS(jc_cap_session_open(&o, &s2), JC_ERR_BUSY);
    ASSERT_CONTAINS(jc_last_detail(), pidtext);
    /* Persistent set and reset are refused too; restore leaves a live session alone. */
    ASSERT_STATUS(jc_cap_set_persistent("0", 400, NULL, NULL, 0), JC_ERR_BUSY);
    ASSERT_STATUS(jc_cap_reset("0", NULL, NULL, NULL, NULL, 0), JC_ERR_BUSY);
    jc_cap_restore_entry e[4];
    int count = 0;
    ASSERT_OK(jc_cap_restore(NULL, e, 4, &count));
    ASSERT_EQ(count, 1);
    ASSERT_EQ(e[0].action, JC_CAP_LEFT_LIVE);
    ASSERT_EQ(e[0].owner_pid, getpid());
    ASSERT_EQ(fake_limit_mw(), 300000);
    /* And the CLI. */
    result_t r = cli("cap", "set", "--gpu", "0", "400", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, pidtext);
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 700000);
    /* Free again. */
    s = open_gpu0();
    ASSERT_OK(jc_cap_session_close(s));
}

TEST(forked_child_does_not_own_the_session) {
    use_scenario("h100-constant-300w");
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        int bad = jc_cap_session_set(s, 0, 400) != JC_ERR_STATE;
        jc_cap_session_close(s); /* frees only */
        _exit(bad ? 1 : 0);
    }
    int status;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sleep_ms(300); /* the guardian must not have reacted to the child's end */
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_EQ(journal_count(), 1);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 700000);
}

/* A child caps at 250 W; its guardian is killed first, then the child: a stale journal. */
static void make_stale(void) {
    int guardian = 0;
    pid_t pid = child_capping(-1, &guardian);
    ASSERT_EQ(kill(guardian, SIGKILL), 0);
    double t0 = now_s();
    while (!pid_gone(guardian) && now_s() - t0 < 2) sleep_ms(5);
    ASSERT_TRUE(pid_gone(guardian));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    child_reap(pid);
    sleep_ms(300);
    ASSERT_EQ(fake_limit_mw(), 250000); /* nobody restored it */
    ASSERT_EQ(journal_count(), 1);
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_STALE);
    ASSERT_EQ(info.owner_pid, pid);
    ASSERT_NEAR(info.saved_limit_w, 500, 1e-9);
    ASSERT_EQ(info.guardian_alive, 0);
}

TEST(stale_journal_cli_restore) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    make_stale();
    result_t r = cli("cap", "get", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "died");
    free_result(&r);
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "restored");
    ASSERT_CONTAINS(r.out, "500 W");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
    r = cli("cap", "restore", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"journals\":[]");
    free_result(&r);
}

TEST(stale_journal_repaired_at_session_open) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    make_stale();
    jc_cap_session *s = open_gpu0();
    ASSERT_CONTAINS(jc_cap_session_note(s), "died");
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
}

/* ------------------------------------------------------------------------------------------------------
 * Reset and persistent caps.
 * ---------------------------------------------------------------------------------------------------- */

TEST(reset_says_saved_or_default) {
    use_scenario("h100-constant-300w");
    fake_set_limit_mw(500000);
    /* A persistent cap, then reset: the saved limit (500), not the default. */
    char note[512];
    ASSERT_OK(jc_cap_set_persistent("0", 300, NULL, note, sizeof note));
    ASSERT_EQ(fake_limit_mw(), 300000);
    ASSERT_OK(jc_cap_set_persistent("0", 350, NULL, note, sizeof note)); /* keeps the first saved limit */
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_PERSISTENT);
    ASSERT_NEAR(info.saved_limit_w, 500, 1e-9);
    ASSERT_NEAR(info.set_limit_w, 350, 1e-9);
    jc_cap_reset_kind did = JC_CAP_RESET_NONE;
    double limit = 0;
    ASSERT_OK(jc_cap_reset("0", NULL, &did, &limit, note, sizeof note));
    ASSERT_EQ(did, JC_CAP_RESET_SAVED);
    ASSERT_NEAR(limit, 500, 1e-9);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_EQ(journal_count(), 0);
    ASSERT_STR_EQ(jc_cap_reset_kind_name(did), "saved");
    /* No journal: the default. */
    ASSERT_OK(jc_cap_reset("0", NULL, &did, &limit, note, sizeof note));
    ASSERT_EQ(did, JC_CAP_RESET_DEFAULT);
    ASSERT_NEAR(limit, 700, 1e-9);
    ASSERT_EQ(fake_limit_mw(), 700000);
    /* In a session: not changed -> default; changed -> saved. */
    fake_set_limit_mw(500000);
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_reset(s, 0, &did));
    ASSERT_EQ(did, JC_CAP_RESET_DEFAULT);
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_OK(jc_cap_session_reset(s, 0, &did));
    ASSERT_EQ(did, JC_CAP_RESET_SAVED);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_reset(s, -1, &did));
    ASSERT_EQ(did, JC_CAP_RESET_SAVED);
    ASSERT_EQ(fake_limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 500000);
}

TEST(session_over_a_persistent_cap) {
    use_scenario("h100-constant-300w");
    ASSERT_OK(jc_cap_set_persistent("0", 400, NULL, NULL, 0));
    jc_cap_session *s = open_gpu0();
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_NEAR(info.saved_limit_w, 400, 1e-9);
    ASSERT_NEAR(info.persistent_saved_limit_w, 700, 1e-9);
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw(), 400000); /* the persistent cap is back ... */
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_PERSISTENT); /* ... with its own journal */
    ASSERT_NEAR(info.saved_limit_w, 700, 1e-9);
    /* The same when the session's owner dies. */
    int guardian = 0;
    pid_t pid = child_capping(DIE_SIGKILL, &guardian);
    child_reap(pid);
    ASSERT_TRUE(wait_limit(400000, 1.0) >= 0);
    double t0 = now_s();
    while (!pid_gone(guardian) && now_s() - t0 < 2) sleep_ms(5);
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_PERSISTENT);
    /* A stale session over it: restore goes all the way back. */
    {
        int g2 = 0;
        pid_t p2 = child_capping(-1, &g2);
        kill(g2, SIGKILL);
        t0 = now_s();
        while (!pid_gone(g2) && now_s() - t0 < 2) sleep_ms(5);
        kill(p2, SIGKILL);
        waitpid(p2, NULL, 0);
        ASSERT_EQ(fake_limit_mw(), 250000);
    }
    jc_cap_restore_entry e[4];
    int n = 0;
    ASSERT_OK(jc_cap_restore(NULL, e, 4, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(e[0].action, JC_CAP_RESTORED);
    ASSERT_EQ(e[0].was, JC_CAP_MANAGER_STALE);
    ASSERT_NEAR(e[0].limit_w, 700, 1e-9);
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0);
}

TEST(guardian_that_cannot_start_fails_open) {
    use_scenario("h100-constant-300w");
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    setenv("JOULECAP_CLI", "/nonexistent/joulecap", 1);
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(jc_last_detail(), "JOULECAP_CLI");
    ASSERT_CONTAINS(jc_last_detail(), "No cap was changed");
    o.guardian_path = "/bin/true"; /* runs, but is not joulecap */
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(jc_last_detail(), "without answering");
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0);
    o.guardian_path = env_or_die("JC_CLI"); /* the explicit path wins over the environment */
    ASSERT_OK(jc_cap_session_open(&o, &s));
    ASSERT_OK(jc_cap_session_close(s));
    setenv("JOULECAP_CLI", env_or_die("JC_CLI"), 1);
}

TEST(cuda_numbering_and_two_gpus) {
    use_scenario("two-gpus");
    /* CUDA_VISIBLE_DEVICES=1: CUDA GPU 0 is NVML GPU 1. */
    setenv("CUDA_VISIBLE_DEVICES", "1", 1);
    jc_cap_session *s = open_gpu0();
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_EQ(fake_limit_mw_of(1), 300000);
    ASSERT_EQ(fake_limit_mw_of(0), 700000);
    unsetenv("CUDA_VISIBLE_DEVICES");
    /* The other GPU is free for another session. */
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "GPU-11111111";
    jc_cap_session *s2 = NULL;
    ASSERT_OK(jc_cap_session_open(&o, &s2));
    ASSERT_OK(jc_cap_session_set(s2, -1, 250));
    ASSERT_EQ(fake_limit_mw_of(0), 250000);
    o.gpus = "all";
    jc_cap_session *s3 = NULL;
    ASSERT_STATUS(jc_cap_session_open(&o, &s3), JC_ERR_BUSY);
    ASSERT_OK(jc_cap_session_close(s2));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(fake_limit_mw_of(0), 700000);
    ASSERT_EQ(fake_limit_mw_of(1), 700000);
    jc_cap_info list[4];
    int n = 0;
    ASSERT_OK(jc_cap_list(NULL, list, 4, &n));
    ASSERT_EQ(n, 2);
    ASSERT_STR_EQ(list[1].uuid, "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
}

/* ------------------------------------------------------------------------------------------------------
 * The CLI.
 * ---------------------------------------------------------------------------------------------------- */

TEST(cli_get_set_reset) {
    use_scenario("h100-constant-300w");
    result_t r = cli("cap", "get", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"limit_w\":700");
    ASSERT_CONTAINS(r.out, "\"min_limit_w\":200");
    ASSERT_CONTAINS(r.out, "\"managed_by\":\"none\"");
    free_result(&r);

    r = cli("cap", "set", "--gpu", "0", "300", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "300 W");
    free_result(&r);
    sleep_ms(200);
    ASSERT_EQ(fake_limit_mw(), 300000); /* persists after the CLI exited */
    ASSERT_EQ(journal_count(), 1);

    r = cli("cap", "get", "--gpu", "0", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"managed_by\":\"persistent\"");
    ASSERT_CONTAINS(r.out, "\"saved_limit_w\":700");
    free_result(&r);
    r = cli("cap", "get", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "persistent");
    free_result(&r);

    r = cli("cap", "set", "9999", NULL);
    ASSERT_TRUE(r.code == 2 || r.code == 3);
    ASSERT_CONTAINS(r.err, "200 W to 700 W");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 300000);

    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "saved limit");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 700000);
    ASSERT_EQ(journal_count(), 0);

    r = cli("cap", "reset", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"did\":\"default\"");
    free_result(&r);

    r = cli("cap", "set", "--gpu", "0", "300W", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    r = cli("cap", "restore", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "persistent cap removed");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 700000);
}

TEST(cli_errors_and_help) {
    use_scenario("h100-constant-300w");
    result_t r = cli("cap", "--help", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "Examples:");
    ASSERT_CONTAINS(r.out, "cap set --gpu 0 300");
    free_result(&r);
    r = cli("help", "cap", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "restore");
    free_result(&r);
    r = cli("cap", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    r = cli("cap", "frobnicate", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    r = cli("cap", "set", "--gpu", "0", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    r = cli("cap", "set", "--gpu", "0", "lots", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    r = cli("cap", "set", "--gpu", "5", "300", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "GPU-8f3c2a1e");
    free_result(&r);
    r = cli("cap", "get", "--bogus", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
    use_scenario("no-permission");
    r = cli("cap", "set", "--gpu", "0", "300", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "root");
    ASSERT_CONTAINS(r.err, "CAP_SYS_ADMIN");
    free_result(&r);
    ASSERT_EQ(fake_limit_mw(), 700000);
}

JC_TEST_MAIN(TEST_ENTRY(set_within_range_reads_back), TEST_ENTRY(out_of_range_states_the_range),
             TEST_ENTRY(no_permission_at_open_limit_untouched), TEST_ENTRY(close_restores_the_original_not_the_default),
             TEST_ENTRY(unknown_gpu_lists_gpus), TEST_ENTRY(owner_sigkill_restored), TEST_ENTRY(owner_sigterm_restored),
             TEST_ENTRY(owner_sigint_restored), TEST_ENTRY(owner_abort_restored),
             TEST_ENTRY(owner_exit_without_close_restored), TEST_ENTRY(process_group_ctrl_c_restored),
             TEST_ENTRY(second_session_is_busy_naming_the_owner), TEST_ENTRY(forked_child_does_not_own_the_session),
             TEST_ENTRY(stale_journal_cli_restore), TEST_ENTRY(stale_journal_repaired_at_session_open),
             TEST_ENTRY(reset_says_saved_or_default), TEST_ENTRY(session_over_a_persistent_cap),
             TEST_ENTRY(guardian_that_cannot_start_fails_open), TEST_ENTRY(cuda_numbering_and_two_gpus),
             TEST_ENTRY(cli_get_set_reset), TEST_ENTRY(cli_errors_and_help))
