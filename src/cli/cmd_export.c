/* cmd_export.c: 'obsctl export' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_export(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl export: not implemented yet\n");
    return 2;
}
