/* cmd_compare.c: 'obsctl compare' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_compare(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl compare: not implemented yet\n");
    return 2;
}
