/* cmd_status.c: 'obsctl status' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_status(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl status: not implemented yet\n");
    return 2;
}
