/* cmd_budget.c: 'obsctl budget' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_budget(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl budget: not implemented yet\n");
    return 2;
}
