/* cmd_get.c: 'obsctl get' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_get(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl get: not implemented yet\n");
    return 2;
}
