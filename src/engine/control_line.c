/*
 * control_line.c: the lines the control socket writes (control.h), shared
 * by reference between the clients they are queued for.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/control.h"

struct control_line *control_line_new(const char *text, size_t len)
{
    struct control_line *l = malloc(sizeof *l + len);
    if (!l)
        return NULL;
    l->refs = 1;
    l->len = len;
    l->alloc = sizeof *l + len;
    l->final = false;
    memcpy(l->data, text, len);
    return l;
}

struct control_line *control_line_get(struct control_line *l)
{
    if (l)
        l->refs++;
    return l;
}

void control_line_put(struct control_line *l)
{
    if (l && !--l->refs)
        free(l);
}
