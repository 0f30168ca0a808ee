/* Internal: a channel's control tags (supervisor/channel.c; the range is
 * in troupe/channel.h). The transport knows them too: they cross in SEND
 * envelopes (transport/codec.h), and a take never waits for credit
 * (transport/link.c): a full channel drains only through takes. */
#ifndef TR_SUPERVISOR_CHANNEL_INT_H
#define TR_SUPERVISOR_CHANNEL_INT_H

#define TR__CH_OPEN 0xFFFF0721u
#define TR__CH_CLOSE 0xFFFF0722u
#define TR__CH_TAKE 0xFFFF0723u

#endif
