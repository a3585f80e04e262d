/*
 * commands.h: the obsctl subcommands.
 *
 * obsctl.c parses nothing but the subcommand name and hands the rest of the
 * command line to one of these. Each lives in its own cmd_<name>.c. argv[0] is
 * the subcommand name, so getopt_long works as usual. The return value is the
 * process exit status: 0 success, 1 runtime failure (store missing, daemon not
 * running), 2 usage or bad input.
 */
#ifndef OBSD_CLI_COMMANDS_H
#define OBSD_CLI_COMMANDS_H

int cmd_runs(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_budget(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_metrics(int argc, char **argv);

#endif
