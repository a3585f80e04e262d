/*
 * cli_output.c: atomic --output files (cli_output.h).
 */
#include "cli/cli_output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void release(struct cli_output *o)
{
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    o->f = NULL;
}

int cli_output_open(struct cli_output *o, const char *cmd, const char *path)
{
    memset(o, 0, sizeof *o);
    if (!path || !strcmp(path, "-")) {
        o->f = stdout;
        return 0;
    }
    size_t n = strlen(path) + 16;
    o->path = strdup(path);
    o->tmp = malloc(n);
    if (!o->path || !o->tmp) {
        fprintf(stderr, "obsctl %s: out of memory\n", cmd);
        release(o);
        return 1;
    }
    /* Same directory as path, so that rename() replaces it atomically. */
    snprintf(o->tmp, n, "%s.XXXXXX", path);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        fprintf(stderr, "obsctl %s: cannot create a file next to %s: %s\n", cmd, path, strerror(errno));
        release(o);
        return 1;
    }
    /* mkstemp makes it 0600; a report is an ordinary file (umask applies). */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    if (!(o->f = fdopen(fd, "w"))) {
        fprintf(stderr, "obsctl %s: %s: %s\n", cmd, o->tmp, strerror(errno));
        close(fd);
        unlink(o->tmp);
        release(o);
        return 1;
    }
    return 0;
}

int cli_output_commit(struct cli_output *o, const char *cmd)
{
    if (!o->tmp) {
        int bad = fflush(o->f) != 0 || ferror(o->f);
        if (bad)
            fprintf(stderr, "obsctl %s: cannot write the output: %s\n", cmd, strerror(errno));
        release(o);
        return bad;
    }
    int bad = fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0;
    int err = errno;
    if (fclose(o->f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (!bad && rename(o->tmp, o->path) != 0) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        fprintf(stderr, "obsctl %s: cannot write %s: %s\n", cmd, o->path, strerror(err));
        unlink(o->tmp);
    }
    release(o);
    return bad;
}

void cli_output_abort(struct cli_output *o)
{
    if (o->tmp) {
        fclose(o->f);
        unlink(o->tmp);
    }
    release(o);
}
