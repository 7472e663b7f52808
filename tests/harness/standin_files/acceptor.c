/*
 * acceptor PORT PROGRAM [ARG...]: the stand-in's listener, in the role of inetd.
 *
 * busybox httpd listens with a backlog of 9. A proxy that releases the requests it held
 * during an upgrade opens a hundred connections at once; past the backlog the kernel
 * answers with SYN cookies, some of which fail, and the connection is reset while the
 * proxy writes a request body (a POST then fails). Real servers listen with a backlog of
 * hundreds (Node's is 511), so this one listens on 127.0.0.1:PORT with 4096 and runs
 * PROGRAM (busybox httpd -i) for each connection, the connection on its stdin and stdout.
 * It exits 1 when the port is taken, as httpd would.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: acceptor PORT PROGRAM [ARG...]\n");
        return 2;
    }
    signal(SIGCHLD, SIG_IGN); /* no zombies: nobody waits for the children */
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(argv[1]));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(server, (struct sockaddr *)&address, sizeof address) != 0 || listen(server, 4096) != 0) {
        perror("acceptor");
        return 1;
    }
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) {
            continue;
        }
        if (fork() == 0) {
            close(server);
            dup2(client, 0);
            dup2(client, 1);
            close(client);
            execv(argv[2], argv + 2);
            _exit(127);
        }
        close(client);
    }
}
