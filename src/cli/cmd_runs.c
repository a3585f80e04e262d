/* cmd_runs.c: 'obsctl runs' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_runs(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl runs: not implemented yet\n");
    return 2;
}
