// A transactional consume-transform-produce consumer written against Kafka's Java client, run
// by tests/java_transactions.rs through exactly's proxy: per message, begin a transaction,
// produce the result to EXACTLY_OUTPUT_TOPIC with its `exactly-id` header, send the consumed
// offset to the transaction, commit. Any error ends the process (the next incarnation's
// initTransactions fences this one and aborts what it left open).
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;

public class TxnPipeline {
    public static void main(String[] args) {
        String bootstrap = System.getenv("EXACTLY_KAFKA_BOOTSTRAP");
        String group = System.getenv("EXACTLY_GROUP");
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("group.id", group);
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        c.put("isolation.level", "read_committed");
        c.put("session.timeout.ms", "6000");
        c.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        c.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("transactional.id", group + "-" + System.getenv("EXACTLY_INSTANCE"));
        p.put("transaction.timeout.ms", "10000");
        p.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        p.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        String output = System.getenv("EXACTLY_OUTPUT_TOPIC");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            consumer.subscribe(List.of(System.getenv("EXACTLY_TOPIC")));
            while (true) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    producer.beginTransaction();
                    ProducerRecord<byte[], byte[]> out = new ProducerRecord<>(output, r.key(), r.value());
                    Header id = r.headers().lastHeader("exactly-id");
                    if (id != null) out.headers().add("exactly-id", id.value());
                    producer.send(out);
                    producer.sendOffsetsToTransaction(
                        Map.of(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1)),
                        consumer.groupMetadata());
                    producer.commitTransaction();
                }
            }
        } catch (Exception e) {
            System.err.println("TxnPipeline: " + e);
            System.exit(1);
        }
    }
}
