/* cmd_watch.c: 'obsctl watch' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_watch(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl watch: not implemented yet\n");
    return 2;
}
