package dev.hasidecar.examples;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * A job that counts forever, with exactly-once state and a checkpoint every second: the
 * demo's and the tests' witness that a new leader recovered the job from its latest
 * checkpoint.
 *
 * <p>The source emits 0, 1, 2, ... at a fixed rate (its position is checkpointed); one keyed
 * counter (checkpointed) counts them. Each record prints {@code count <i> <n>}. With
 * exactly-once state, {@code n == i + 1} on every line, across any number of failovers: a
 * value lost or counted twice breaks it. The print sink itself is at-least-once, so after a
 * recovery the values emitted since the restored checkpoint are printed again, with the same
 * counts.
 *
 * <p>Arguments: records per second (default 10).
 */
public final class CountForever {
    public static void main(String[] args) throws Exception {
        double rate = args.length > 0 ? Double.parseDouble(args[0]) : 10;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        env.enableCheckpointing(1000);
        env.fromSource(
                        new DataGeneratorSource<>(
                                i -> i, Long.MAX_VALUE, RateLimiterStrategy.perSecond(rate), Types.LONG),
                        WatermarkStrategy.noWatermarks(),
                        "numbers")
                .keyBy(x -> 0L, Types.LONG)
                .map(new Count())
                .print();
        env.execute("count-forever");
    }

    /** Counts the records it sees in checkpointed keyed state. */
    static final class Count extends RichMapFunction<Long, String> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext context) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public String map(Long i) throws Exception {
            Long c = count.value();
            long n = (c == null ? 0 : c) + 1;
            count.update(n);
            return "count " + i + " " + n;
        }
    }
}
