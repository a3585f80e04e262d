/* cmd_tokenize.c: 'obsctl tokenize' (placeholder until its module lands). */
#include <stdio.h>

#include "cli/commands.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "obsctl tokenize: not implemented yet\n");
    return 2;
}
