/* cmd_show.c: 'obsctl show' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_show(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl show: not implemented yet\n");
    return 2;
}
