/* Power caps, internal: the journal on disk, process identity, and the NVML side of setting limits.
 *
 * Journal: <state dir>/<uuid>.journal, a small text file replaced atomically (tmp + fsync + rename + fsync of
 * the directory).  Every read-modify-write of a GPU's journal and every limit change made under it happens
 * while holding flock(LOCK_EX) on <state dir>/<uuid>.lock (a file that is never removed, so that the lock
 * always names the same inode).  Every file there is opened with O_NOFOLLOW; the directory must be ours and
 * writable by nobody else (jc__cap_dir).
 *
 *   joulecap-cap-journal 2
 *   uuid GPU-8f3c...
 *   original_mw 700000      limit in force before joulecap's change: what restore puts back
 *   set_mw 300000           limit joulecap set last; 0 = not changed (yet)
 *   base_mw 0               a session over a persistent cap: that cap's own original_mw (0 = none)
 *   owner_pid 1234          0 = persistent (no owner)
 *   owner_start 5678        field 22 of /proc/<pid>/stat (clock ticks since boot)
 *   guardian_pid 1235
 *   guardian_start 5680
 *   created 1764064769.123  Unix time
 *   owner_command python train.py
 *   checksum fnv1a64 0123456789abcdef   FNV-1a 64 of every byte before this line
 *
 * A journal that does not parse exactly (cut short, checksum wrong, a key missing or twice) is damaged: it is
 * refused and kept, never trusted, never removed; `joulecap cap restore --discard UUID` sets it aside.
 * Version 1 (no checksum line) is still read when complete, for journals left by an older joulecap.
 */
#ifndef JC_CAPS_INTERNAL_H
#define JC_CAPS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../core/internal.h"
#include "../sources/nvml.h"

#define JC__CAP_MAX_GPUS (JC_MAX_DEVICES - 1)

typedef struct jc__journal {
    char uuid[96];
    unsigned original_mw;
    unsigned set_mw;
    unsigned base_mw;
    int owner_pid;
    unsigned long long owner_start;
    int guardian_pid;
    unsigned long long guardian_start;
    double created;
    char owner_command[256];
} jc__journal;

/* --- journal.c --------------------------------------------------------------------------------------- */

/* Resolves (and creates) the state directory, symbolic links resolved, and checks it as ssh does: ours,
 * not writable by group or others, every directory above it root's or ours and not writable by others
 * unless sticky.  writing = 0 (only reading journals): a directory of root's is accepted too. */
jc_status jc__cap_dir(const jc_cap_options *opts, char *buf, size_t len, int writing);
/* <dir>/<uuid><suffix>, the UUID with anything but [A-Za-z0-9._-] replaced by '_'. */
void jc__cap_path(char *buf, size_t len, const char *dir, const char *uuid, const char *suffix);
/* 1 when a journal's file name (without ".journal") could be a UUID: [A-Za-z0-9._-], not starting with '.'. */
int jc__cap_name_ok(const char *stem);
/* flock(LOCK_EX) on the GPU's lock file; *fd gets the descriptor to pass to jc__cap_unlock. */
jc_status jc__cap_lock(const char *dir, const char *uuid, int *fd);
void jc__cap_unlock(int fd);
/* Reads a journal: JC_OK with *exists = 1, or JC_OK with *exists = 0 when there is none.  A damaged one:
 * JC_ERR_IO naming its path and the repair; a link or another user's file: JC_ERR_NO_PERMISSION. */
jc_status jc__journal_read(const char *dir, const char *uuid, jc__journal *j, int *exists);
/* Parses a journal's text (len bytes, NUL-terminated; cut into pieces in place); stem is the file's name
 * without ".journal".  0, or -1 with what is wrong in why. */
int jc__journal_parse(char *text, size_t len, const char *stem, jc__journal *j, char *why, size_t wl);
/* JC_ERR_IO: the journal <dir>/<stem>.journal is damaged (why), with the commands that repair it. */
jc_status jc__journal_damaged(const char *dir, const char *stem, const char *why);
/* The journal's text (version 2, with its checksum line) into text; its length, or -1 when it does not fit. */
int jc__journal_format(const jc__journal *j, char *text, size_t len);
uint64_t jc__fnv1a64(const void *data, size_t n);
jc_status jc__journal_write(const char *dir, const jc__journal *j);
jc_status jc__journal_remove(const char *dir, const char *uuid);
/* The file names (without ".journal") of the journals in dir, at most max; -1 with the detail set when dir
 * cannot be read. */
int jc__journal_list(const char *dir, char (*stems)[128], int max);
/* Renames the journal to <journal>.bad-<UTC time> (never over an existing file); kept_as gets the name. */
jc_status jc__journal_set_aside(const char *dir, const char *uuid, char *kept_as, size_t len);
/* Who manages the journal's GPU now (SESSION, PERSISTENT or STALE). */
jc_cap_manager jc__journal_manager(const jc__journal *j);

/* Start time of a process (field 22 of /proc/<pid>/stat); 0 on success, -1 when it does not exist (or is a
 * zombie: *zombie = 1), -2 when it exists but cannot be read. */
int jc__proc_start(int pid, unsigned long long *start, int *zombie);
/* The same from the text of a /proc/<pid>/stat: 0, -1 (a zombie), -2 (not such a line). */
int jc__proc_stat_parse(const char *text, unsigned long long *start, int *zombie);
/* 1 when pid runs and started at start (or cannot be checked but exists), else 0. */
int jc__proc_alive(int pid, unsigned long long start);
/* The command line of pid, arguments joined by spaces, no control characters; "" when unreadable. */
void jc__proc_cmdline(int pid, char *buf, size_t len);
/* Unix time now. */
double jc__wall_time(void);

/* --- gpu.c ------------------------------------------------------------------------------------------- */

typedef struct jc__capgpu {
    nvmlDevice_t dev;
    jc__gpu_ident id;
    int cuda_index; /* -1 when not visible */
    int nvml_index;
    unsigned limit_mw, enforced_mw, default_mw, min_mw, max_mw; /* 0 when unknown */
    jc_status status; /* JC_OK, or why NVML could not identify it (JC_ERR_GPU_LOST); id.uuid is "" then */
    char why[256];
} jc__capgpu;

/* The GPUs of a selection (CUDA numbering; NULL = all visible) with their limits read.  GPUs that NVML
 * cannot identify are included with their status: callers skip them (jc__capgpu_usable). */
jc_status jc__capgpu_select(jc__nvml *nvml, const char *sel, jc__capgpu *out, int max, int *count);
/* Every GPU NVML knows (visible or not), cuda_index filled where visible; unidentified ones included. */
jc_status jc__capgpu_all(jc__nvml *nvml, jc__capgpu *out, int max, int *count);
/* JC_OK, or the GPU's status with "GPU 1 (...) cannot be used: <why>" in the detail. */
jc_status jc__capgpu_usable(const jc__capgpu *g);
/* 1 when a selection means every visible GPU (NULL, "", "all"): unusable GPUs are then skipped, not fatal. */
int jc__sel_is_all(const char *sel);
void jc__capgpu_read_limits(jc__nvml *nvml, jc__capgpu *g);
/* "GPU 0 (NVIDIA H100 80GB HBM3, GPU-8f3c...)" */
const char *jc__capgpu_label(const jc__capgpu *g, char *buf, size_t len);
/* Watts -> mW after checking [min, max]: JC_ERR_INVALID_ARGUMENT stating the range in W. */
jc_status jc__capgpu_check(const jc__capgpu *g, double watts, unsigned *mw);
/* Sets the limit and reads it back; errors in words (permission: what gives it; a limit that did not take,
 * read back more than 1 W away: asked X W, the GPU reports Y W).  *now_mw (may be NULL) gets the limit read
 * back, 0 when unknown. */
jc_status jc__capgpu_set(jc__nvml *nvml, const jc__capgpu *g, unsigned mw, unsigned *now_mw);
/* The set_mw a journal should hold after a set of mw that failed: prev (the journal's set_mw before) when
 * the GPU still reports the limit it had before, what it reports when that is another limit, mw when it is
 * unknown (restore then puts the saved limit back, a no-op at worst). */
unsigned jc__set_mw_after_failure(unsigned prev, unsigned before, unsigned now, unsigned mw);
/* Writes the limit in force back to itself: fails exactly when a real change would (permission). */
jc_status jc__capgpu_probe(jc__nvml *nvml, jc__capgpu *g);
/* One restore step for a journal that is not owned by a live process, under the GPU's lock: puts the saved
 * limit back (when it was changed), then removes the journal or, for a session over a persistent cap,
 * writes the persistent cap's journal back.  *restored_mw gets the limit put back (0 when none was needed);
 * *more = 1 when a persistent journal remains. */
jc_status jc__journal_restore_step(jc__nvml *nvml, const char *dir, const jc__journal *j, const jc__capgpu *g,
                                   unsigned *restored_mw, int *more);
/* The owner of a live journal in words: "process 1234 (python train.py)". */
void jc__journal_owner_text(const jc__journal *j, char *buf, size_t len);

double jc__w_of(unsigned mw); /* W, NaN for 0 */
/* The public description of a GPU and of its journal in dir (NULL: none). */
void jc__capgpu_describe(const jc__capgpu *g, const char *dir, jc_cap_info *out);
/* Appends "; "-separated text to note (NULL allowed). */
void jc__note_append(char *note, size_t len, const char *fmt, ...) JC__PRINTF(3, 4);
/* JC_ERR_BUSY naming the live owner of j. */
jc_status jc__journal_busy(const jc__journal *j, const jc__capgpu *g);
/* Under the GPU's lock: when its journal is stale (owner dead), puts the saved limit back (one step) and says
 * so in note; *j / *exists then describe the journal left. */
jc_status jc__journal_repair_stale(jc__nvml *nvml, const char *dir, const jc__capgpu *g, jc__journal *j,
                                   int *exists, char *note, size_t note_len);

#endif
