"""tasks.broker: kombu's Redis transport with one client per channel, on a real redis-server."""

from __future__ import annotations

import dataclasses

import redis
from kombu import Connection, Exchange, Queue

from tasks import broker
from tasks.app import create_celery
from workers.settings import Settings


def test_the_app_uses_it_for_redis_urls_and_kombus_own_for_rediss(settings: Settings) -> None:
    plain = create_celery(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    conn = plain.connection_for_write()
    assert isinstance(conn.transport, broker.Transport)
    assert conn.as_uri().startswith("redis://")  # Flower picks its broker reader by this scheme
    tls = create_celery(dataclasses.replace(settings, redis_url="rediss://127.0.0.1:1/0"))
    assert tls.connection_for_write().transport_cls == "rediss"  # kombu derives its TLS defaults from the name


def test_publishes_unacked_bookkeeping_and_acks_share_one_client(redis_url: str) -> None:
    queue = Queue("callq-broker-test", Exchange("callq-broker-test", type="direct"), routing_key="callq-broker-test")
    events = Exchange("callq-broker-events", type="fanout")
    plain = redis.Redis.from_url(redis_url)
    with Connection(redis_url, transport=broker.TRANSPORT) as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        built = []
        create = channel._create_client
        channel._create_client = lambda *a, **k: built.append(create(*a, **k)) or built[-1]
        subscriber = plain.pubsub()
        subscriber.psubscribe("/*callq-broker-events*")  # kombu's fanout topic, whatever its key prefix
        subscriber.get_message(timeout=5)  # the subscription's confirmation

        producer = conn.Producer()
        for i in range(5):
            producer.publish({"n": i}, exchange=queue.exchange, routing_key="callq-broker-test", declare=[queue])
            producer.publish({"event": i}, exchange=events, declare=[events])

        received = []
        with conn.Consumer(queue, callbacks=[lambda body, message: received.append((body, message))]):
            while len(received) < 5:
                conn.drain_events(timeout=5)
            # Delivered and not yet acked: kombu's restore bookkeeping holds them (visibility timeout).
            assert plain.hlen("unacked") == len(received)
            for _, message in received:
                message.ack()
        assert [body for body, _ in received] == [{"n": i} for i in range(5)]
        assert plain.hlen("unacked") == 0 and plain.zcard("unacked_index") == 0

        fanned = []
        while len(fanned) < 5 and (message := subscriber.get_message(timeout=5)) is not None:
            fanned += [message["data"]] if message["type"] == "pmessage" else []
        assert len(fanned) == 5
        # One client for five fanout publishes, five deliveries' bookkeeping and five acks.
        assert len(built) == 1

        channel._disconnect_pools()  # what a fork or a close does: the next use gets a client on the new pool
        with channel.conn_or_acquire() as client:
            assert client is built[-1] and len(built) == 2
            assert client.connection_pool is channel.pool
        subscriber.close()
    plain.close()


def test_closing_a_lost_connection_again_leaves_unacked_messages_in_redis_and_raises_nothing(redis_url: str) -> None:
    """What Celery does on a lost connection (a failover): collect it (the transport loses its client), then close
    it, which restores the channel's unacked messages. That must not raise past kombu (it ended the worker)."""
    broker.register()
    plain = redis.Redis.from_url(redis_url)
    conn = Connection(redis_url)
    assert isinstance(conn.transport, broker.Transport)
    queue = conn.SimpleQueue("callq-broker-lost")
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    assert message.payload == {"n": 1}  # delivered, never acked
    conn._do_close_transport()  # as Connection.collect ends
    conn.close()
    assert plain.hlen("unacked") == 1  # kept for the visibility timeout to restore
    plain.close()
