/* `joulecap help [TOPIC]`: the reference docs installed with the tool. */
#include "help.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "errors.h"

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int jc_cli_docs_dir(char *buf, size_t len) {
    /* /proc/self/exe, not argv[0]: the Python package's console script starts the tool as plain "joulecap". */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(buf, len, "(the folder of this program: /proc/self/exe cannot be read)");
        return 0;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    static const char *const places[] = {"%s/../_docs", "%s/_docs"}; /* the Python package, a CMake build */
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        char cand[PATH_MAX + 16];
        snprintf(cand, sizeof cand, places[i], exe);
        char real[PATH_MAX];
        if (is_dir(cand) && realpath(cand, real)) {
            snprintf(buf, len, "%s", real);
            return 1;
        }
    }
    snprintf(buf, len, "%s/../_docs or %s/_docs", exe, exe);
    return 0;
}

static int is_doc(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 3 && e->d_name[0] != '.' && strcmp(e->d_name + n - 3, ".md") == 0;
}

/* The document's first "# " heading, without the "# ". */
static void doc_title(const char *path, char *buf, size_t len) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "# ", 2) == 0) {
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(buf, len, "%s", line + 2);
            break;
        }
    }
    fclose(f);
}

static void list_topics(FILE *out, const char *dir) {
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_doc, alphasort);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX + 256], title[600];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        doc_title(path, title, sizeof title);
        fprintf(out, "  %-13.*s %s\n", (int)(strlen(names[i]->d_name) - 3), names[i]->d_name, title);
        free(names[i]);
    }
    free(names);
    if (n <= 0) fprintf(out, "  (none in %s)\n", dir);
}

int jc_cli_help_topics(void) {
    char dir[PATH_MAX + 64];
    int have = jc_cli_docs_dir(dir, sizeof dir);
    fputs("Usage: joulecap help COMMAND   a command's options and examples (as 'joulecap COMMAND --help')\n"
          "       joulecap help TOPIC     a reference document, installed with joulecap\n"
          "\n"
          "Commands: info, run, monitor, cap, profile.  'joulecap --help' has an overview.\n"
          "\n",
          stdout);
    if (!have) {
        printf("Topics: no reference docs are installed beside this joulecap (looked in %s); they are the files\n"
               "docs/*.md of joulecap's source.\n", dir);
        return JC_EXIT_OK;
    }
    printf("Topics (%s):\n", dir);
    list_topics(stdout, dir);
    return JC_EXIT_OK;
}

int jc_cli_help_topic(const char *topic) {
    char dir[PATH_MAX + 64];
    if (!jc_cli_docs_dir(dir, sizeof dir)) {
        jc_cli_err("no reference docs are installed beside this joulecap (looked in %s)", dir);
        fprintf(stderr, "They are the files docs/*.md of joulecap's source; 'joulecap --help' has an overview.\n");
        return JC_EXIT_FAILURE;
    }
    size_t n = strlen(topic);
    if (n > 3 && strcmp(topic + n - 3, ".md") == 0) n -= 3;
    char path[PATH_MAX + 256];
    FILE *f = NULL;
    if (n > 0 && !memchr(topic, '/', n) && topic[0] != '.') {
        snprintf(path, sizeof path, "%s/%.*s.md", dir, (int)n, topic);
        f = fopen(path, "r");
    }
    if (!f) {
        jc_cli_err("no command or help topic '%s'", topic);
        fprintf(stderr, "The commands are: info, run, monitor, cap, profile.  The topics (%s):\n", dir);
        list_topics(stderr, dir);
        return JC_EXIT_USAGE;
    }
    char buf[8192];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, k, stdout);
    fclose(f);
    if (fflush(stdout) != 0 || ferror(stdout)) return JC_EXIT_FAILURE;
    return JC_EXIT_OK;
}
